"""Cron broadcasts: each occurrence of ``schedule: {cron: ...}`` becomes a run when it falls due.

A recurrence is evaluated on the wall clock (see :mod:`workers.schedules`):
APScheduler's :class:`~apscheduler.triggers.cron.CronTrigger` runs on a UTC
clock that stands for the wall clock of the schedule's zone, so ``0 10 * * *``
yields the wall times ``2026-03-08T10:00``, ``2026-03-09T10:00``, ... whatever
the zone's offset does. Each wall time is then resolved to an instant with
:func:`~workers.quiet_hours.resolve_wall`: a wall time in a spring-forward gap
is the first instant after the gap, one that happens twice (fall-back) is its
first occurrence. So a DST change neither skips nor doubles an occurrence.

An occurrence's run is keyed by its wall time (``2026-03-09T10:00:00``, no
offset: the same for every member of a ``timezone: member`` schedule) and
falls due at that wall time in the schedule's zone, or in
:data:`~workers.schedules.EARLIEST_ZONE` for ``timezone: member`` (planning
then holds each member's row until the wall time in their own zone). The run
maker (:func:`make_broadcast_runs`) writes a run only once it is due, so a
recurrence never fills the store with future runs, and an edit of the
schedule applies to every occurrence not yet written.

Decisions:

- **Downtime** (or a pause): only the latest missed occurrence is written,
  late; the earlier ones are skipped and logged. A weekly newsletter that
  was down for three weeks sends once, not three times.
- **Where the recurrence starts**: the first occurrence after the version
  that set the current ``cron`` and ``timezone`` was created (editing the
  template or ``until`` keeps the recurrence going; changing the cron starts
  it afresh from the edit).
- **until** is inclusive: a naive ``until`` is a wall time compared with the
  occurrence's wall time; one with an offset is compared with the instant
  the run falls due.
- **An edited schedule**: a run still ``scheduled`` (not yet claimed, e.g.
  while the campaign is paused) whose wall time is no longer an occurrence of
  the new schedule is cancelled; one that still is takes the new due instant.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

import structlog
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store import Campaign, CampaignRun, CampaignVersion, RunStatus

from .campaigns import CampaignSpec
from .program import Program
from .runs import write_run
from .schedules import EARLIEST_ZONE, Schedule

__all__ = ["Recurrence", "make_broadcast_runs", "run_wall", "since_unchanged"]

log = structlog.get_logger(__name__)

#: How an occurrence is written in ``campaign_runs.occurrence``: a wall time, no offset.
_WALL_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
#: The same shape as a SQL LIKE pattern (``_`` is one character).
_WALL_LIKE = "____-__-__T__:__:__"
#: Wall times can run ahead of the zone's current wall clock by a DST shift (at most
#: 2h anywhere) and still be due: 01:45 on a fall-back night is due at the second 01:30.
_DST_SLACK = timedelta(hours=3)
_TICK = timedelta(microseconds=1)
#: Skipped occurrences are counted up to this many (for the log).
COUNT_LIMIT = 10_000


def _parse_wall(occurrence: str) -> datetime | None:
    return datetime.fromisoformat(occurrence) if _WALL_FORMAT.match(occurrence) else None


def run_wall(schedule: Schedule | None, occurrence: str) -> datetime | None:
    """The wall time a run stands for: a cron run's occurrence, or the ``at`` of a one-off."""
    if schedule is None:
        return None
    if schedule.recurring:
        return _parse_wall(occurrence)
    return schedule.at.replace(tzinfo=None) if schedule.at is not None else None


@dataclass(frozen=True)
class Recurrence:
    """A cron schedule's occurrences as wall times, and when each falls due."""

    schedule: Schedule

    @property
    def zone(self) -> str:
        """The zone whose wall clock decides when a run falls due."""
        return EARLIEST_ZONE if self.schedule.member_local else self.schedule.timezone

    @property
    def _trigger(self) -> CronTrigger:
        return _cron_trigger(self.schedule.cron or "")

    def due_at(self, wall: datetime) -> datetime:
        """When the run of the occurrence at ``wall`` falls due (UTC)."""
        return self.schedule.wall_instant(wall, self.zone)

    def within_until(self, wall: datetime) -> bool:
        """Whether ``wall`` comes no later than ``until`` (always, without one)."""
        until = self.schedule.until
        if until is None:
            return True
        if until.tzinfo is None:
            return wall <= until
        return self.due_at(wall) <= until.astimezone(UTC)

    def after(self, wall: datetime, *, trigger: CronTrigger | None = None) -> datetime | None:
        """The first occurrence strictly after ``wall`` (None past ``until``)."""
        fire = (trigger or self._trigger).get_next_fire_time(None, _utc(wall) + _TICK)
        if fire is None:
            return None
        found = fire.replace(tzinfo=None)
        return found if self.within_until(found) else None

    def next_after(self, now: datetime) -> datetime | None:
        """The first occurrence whose run falls due after ``now`` (None past ``until``)."""
        wall = now.astimezone(zoneinfo.ZoneInfo(self.zone)).replace(tzinfo=None) - _DST_SLACK
        candidate = self.after(wall)
        while candidate is not None and self.due_at(candidate) <= now:
            candidate = self.after(candidate)
        return candidate

    def contains(self, wall: datetime) -> bool:
        """Whether ``wall`` is an occurrence of this schedule."""
        return self.after(wall - _TICK) == wall

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Occurrences after ``start`` up to ``end`` (inclusive), in order."""
        trigger = self._trigger
        current = start
        while (found := self.after(current, trigger=trigger)) is not None and found <= end:
            yield found
            current = found

    def latest_due(self, start: datetime, now: datetime) -> tuple[datetime | None, int]:
        """The latest occurrence after ``start`` already due at ``now``, and how many
        earlier ones after ``start`` it supersedes (counted up to :data:`COUNT_LIMIT`).

        Searches backwards from now in doubling windows, so a dense cron after a
        long downtime costs about as much as the last window, not the whole gap.
        """
        first = self.after(start)
        if first is None or self.due_at(first) > now:  # the usual tick: nothing due yet
            return None, 0
        end = now.astimezone(zoneinfo.ZoneInfo(self.zone)).replace(tzinfo=None) + _DST_SLACK
        window = timedelta(hours=6)
        while True:
            low = max(start, end - window)
            due = list(self._due(low, end, now))
            if due or low == start:
                break
            window *= 2
        if not due:
            return None, 0
        latest = due[-1]
        skipped = sum(1 for _ in islice(self.between(start, latest - _TICK), COUNT_LIMIT))
        return latest, skipped

    def _due(self, low: datetime, end: datetime, now: datetime) -> Iterator[datetime]:
        for wall in self.between(low, end):
            if self.due_at(wall) > now:  # instants grow with wall times: none later is due
                return
            yield wall


@functools.lru_cache(maxsize=256)
def _cron_trigger(cron: str) -> CronTrigger:
    """A cron expression on a UTC clock that stands for a zone's wall clock (parsed once)."""
    return CronTrigger.from_crontab(cron, timezone=UTC)


def _utc(wall: datetime) -> datetime:
    return wall.replace(tzinfo=UTC)


def since_unchanged(
    session: Session, campaign_id: int, key: Callable[[CampaignSpec], Hashable]
) -> datetime:
    """When the campaign's versions started to agree on ``key(spec)`` up to the current one.

    A recurrence (or a trigger) starts when the version that set it was
    created; later versions that leave it alone do not restart it.
    """
    versions = session.execute(
        select(CampaignVersion.created_at, CampaignVersion.spec)
        .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
        .where(
            CampaignVersion.campaign_id == campaign_id,
            CampaignVersion.version <= Campaign.current_version,
        )
        .order_by(CampaignVersion.version.desc())
    ).all()
    current = key(CampaignSpec.model_validate(versions[0].spec))
    since: datetime = versions[0].created_at
    for created_at, spec in versions[1:]:
        if key(CampaignSpec.model_validate(spec)) != current:
            break
        since = created_at
    return since


def _cron_key(spec: CampaignSpec) -> Hashable:
    schedule = spec.schedule
    return (schedule.cron, schedule.timezone) if schedule is not None else None


def make_broadcast_runs(
    session: Session,
    campaign: Campaign,
    version_id: int,
    spec: CampaignSpec,
    now: datetime,
    program: Program | None = None,
) -> int:
    """Write the run of a cron broadcast's latest occurrence now due; see the module docstring.

    Returns how many runs were written (0 or 1); a broadcast without a cron does nothing.
    """
    schedule = spec.schedule
    if schedule is None or not schedule.recurring:
        return 0
    recurrence = Recurrence(schedule)
    _revise_scheduled(session, campaign.id, recurrence)
    zone = zoneinfo.ZoneInfo(recurrence.zone)

    def wall(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    last = session.scalar(
        select(func.max(CampaignRun.occurrence)).where(
            CampaignRun.campaign_id == campaign.id, CampaignRun.occurrence.like(_WALL_LIKE)
        )
    )
    start = _parse_wall(last) if last else None
    created = session.scalar(
        select(CampaignVersion.created_at).where(CampaignVersion.id == version_id)
    )
    # The usual tick: the last run came after this version, so it is where to go on from.
    if start is None or created is None or start < wall(created):
        since = wall(since_unchanged(session, campaign.id, _cron_key))
        start = since if start is None else max(start, since)
    latest, skipped = recurrence.latest_due(start, now)
    if latest is None:
        return 0
    if skipped:
        first = recurrence.after(start)
        log.warning(
            "missed occurrences skipped: only the latest is sent",
            campaign=campaign.name,
            skipped=skipped,
            first_skipped=first.isoformat() if first else None,
            sending=latest.isoformat(),
        )
    occurrence = latest.isoformat(timespec="seconds")
    run_id = write_run(session, campaign.id, version_id, occurrence, recurrence.due_at(latest))
    if run_id is not None:
        log.info("occurrence due", campaign=campaign.name, occurrence=occurrence, run_id=run_id)
    return 0 if run_id is None else 1


def _revise_scheduled(session: Session, campaign_id: int, recurrence: Recurrence) -> None:
    """Cancel scheduled runs the current schedule no longer has; re-time the others."""
    for run_id, occurrence, due_at in session.execute(
        select(CampaignRun.id, CampaignRun.occurrence, CampaignRun.due_at).where(
            CampaignRun.campaign_id == campaign_id, CampaignRun.status == RunStatus.SCHEDULED
        )
    ).all():
        wall = _parse_wall(occurrence)
        if wall is None or not recurrence.contains(wall):
            session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.SCHEDULED)
                .values(status=RunStatus.CANCELLED)
            )
            log.info("occurrence no longer scheduled: run cancelled", run_id=run_id)
        elif (new_due := recurrence.due_at(wall)) != due_at:
            session.execute(
                update(CampaignRun).where(CampaignRun.id == run_id).values(due_at=new_due)
            )
