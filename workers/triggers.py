"""Segment triggers: ``kind: triggered``, ``on: entered_segment NAME``.

Every ``check_every`` the scheduler's tick takes a snapshot of the saved
segment (:func:`segments.snapshot`: who entered and left since the previous
evaluation) and, in the same transaction, writes for each triggered campaign
watching it one run (occurrence = the snapshot instant) holding one
``pending`` delivery row per member who entered, keyed
``trigger:<campaign>:<member>:<run>`` (plus the channel with ``channels:
all``). The run is written ``scheduled`` and due at once; the same tick
claims it, and its plan job (:func:`plan_triggered`) only enqueues the rows.
A snapshot with nobody entering writes no run.

Rules:

- **One snapshot per segment, its diff shared.** The snapshot moves the
  segment's stored members forward, so whoever takes it consumes the diff:
  every active triggered campaign on the segment gets the same entries from
  it. The segment is snapshotted at the shortest ``check_every`` among them.
  ``loyalcast segments snapshot NAME`` goes through :func:`snapshot_and_trigger`
  too, so a manual snapshot triggers the campaigns rather than losing their
  entries.
- **A baseline first.** Entries count for a campaign only when the previous
  snapshot was taken after the campaign started watching the segment (its
  first version naming it, unchanged since); the first snapshot after that is
  a baseline: members already in the segment did not "enter".
- **Entering again triggers again**: a member who left and re-entered in a
  later snapshot gets a new run and so a new key. Leaving and re-entering
  between two snapshots is not seen (the granularity is ``check_every``).
- **The ordering caveat of snapshots**: on PostgreSQL a member whose data
  changes while the snapshot runs can be reported as both left and entered;
  such a member was in the segment before and after, so is not triggered.
- **Still true at send time**: a row that waited (quiet hours, a cap) for a
  member who has left the segment since (as of its latest snapshot) ends
  ``suppressed``, reason ``left_segment`` (:func:`recheck_triggered`).
- A ``segment`` on the campaign narrows who is triggered (checked by the
  plan job, and again at send time by :func:`recheck_triggered`, so a row
  the sweeper released before its plan ran is narrowed too; the others'
  rows end ``suppressed``, reason ``not_in_segment``).
  A paused campaign is not triggered (members entering while it is paused
  are not sent later); a cancelled one never again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from segments import Rule, RuleError, SnapshotDiff, audience_filter, snapshot
from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    Delivery,
    DeliveryStatus,
    Member,
    RunStatus,
    utcnow,
)
from store.bulk import insert_ignore_many
from store.models import Segment, SegmentMember

from .campaigns import CampaignSpec
from .compose import Closed
from .jobs import chunked, enqueue_deliver
from .ledger import deliveries
from .planning import PlanResult, segment_rule
from .planning import _finish as finish_run  # the kinds' planners build on planning
from .policy import ConsentState
from .program import Program
from .recurrence import since_unchanged
from .rule_checks import matching, rule_error_rows
from .runs import write_run
from .runtime import Runtime

__all__ = [
    "TriggerResult",
    "make_trigger_runs",
    "plan_triggered",
    "recheck_triggered",
    "snapshot_and_trigger",
    "trigger_key",
]

log = structlog.get_logger(__name__)

#: Rows written per INSERT (and member ids per IN list).
_CHUNK = 1000


@dataclass(frozen=True)
class _Watcher:
    campaign_id: int
    name: str
    version_id: int
    spec: CampaignSpec
    since: datetime


@dataclass(frozen=True)
class TriggerResult:
    """What one snapshot of a watched segment did."""

    diff: SnapshotDiff
    runs: dict[str, int]
    """Per campaign name, the run written for it (only campaigns someone entered)."""
    baseline: list[str]
    """Campaigns for which this snapshot was the baseline."""


def trigger_key(campaign_id: int, member_id: int, run_id: int, channel: str | None = None) -> str:
    """A triggered delivery's once-only key; the channel joins it for ``channels: all``."""
    key = f"trigger:{campaign_id}:{member_id}:{run_id}"
    return f"{key}:{channel}" if channel else key


def _watchers(session: Session, segment_name: str) -> list[_Watcher]:
    rows = session.execute(
        select(Campaign.id, Campaign.name, CampaignVersion.id, CampaignVersion.spec)
        .join(
            CampaignVersion,
            (CampaignVersion.campaign_id == Campaign.id)
            & (CampaignVersion.version == Campaign.current_version),
        )
        .where(Campaign.kind == "triggered", Campaign.status == CampaignStatus.ACTIVE)
        .order_by(Campaign.id)
    ).all()
    watchers = []
    for campaign_id, name, version_id, spec_json in rows:
        spec = CampaignSpec.model_validate(spec_json)
        if spec.trigger_segment == segment_name:
            since = since_unchanged(session, campaign_id, lambda s: s.trigger_segment)
            watchers.append(_Watcher(campaign_id, name, version_id, spec, since))
    return watchers


def make_trigger_runs(
    session: Session,
    campaign: Campaign,
    version_id: int,
    spec: CampaignSpec,
    now: datetime,
    program: Program | None = None,
) -> int:
    """The run maker of ``kind: triggered``: snapshot the watched segment when it is due.

    The first campaign of a segment to be asked does the work for all of them;
    the others then find the segment freshly evaluated. Returns the runs written.
    """
    name = spec.trigger_segment
    segment = _lock_segment(session, name) if name else None
    if segment is None:
        log.warning("triggered campaign watches no saved segment", campaign=campaign.name, on=name)
        return 0
    watchers = _watchers(session, segment.name)
    if not watchers:
        return 0
    every = min(w.spec.snapshot_every for w in watchers)
    if segment.evaluated_at is not None and segment.evaluated_at + every > now:
        return 0
    return len(_fan_out(session, segment, watchers, now).runs)


def snapshot_and_trigger(
    session: Session, segment: Segment, now: datetime | None = None
) -> TriggerResult:
    """Snapshot ``segment`` now and trigger every campaign watching it (caller commits)."""
    locked = _lock_segment(session, segment.name)
    if locked is None:
        raise LookupError(f"no segment named {segment.name!r}")
    return _fan_out(session, locked, _watchers(session, locked.name), now or utcnow())


def _lock_segment(session: Session, name: str) -> Segment | None:
    # Lock first, then read evaluated_at: a second scheduler waits here and
    # then sees the snapshot the first one took.
    return session.scalar(
        select(Segment)
        .where(Segment.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _fan_out(
    session: Session, segment: Segment, watchers: Sequence[_Watcher], now: datetime
) -> TriggerResult:
    previous = segment.evaluated_at
    diff = snapshot(session, segment, now=now)
    entered = sorted(set(diff.entered) - set(diff.left))  # see "the ordering caveat"
    runs: dict[str, int] = {}
    baseline: list[str] = []
    for watcher in watchers:
        if previous is None or previous < watcher.since:
            baseline.append(watcher.name)
            continue
        if entered:
            runs[watcher.name] = _write_trigger_run(session, watcher, segment.name, entered, now)
    log.info(
        "segment snapshot",
        segment=segment.name,
        entered=len(entered),
        left=len(diff.left),
        runs=runs,
        baseline=baseline,
    )
    return TriggerResult(diff, runs, baseline)


def _write_trigger_run(
    session: Session, watcher: _Watcher, segment: str, members: list[int], now: datetime
) -> int:
    spec = watcher.spec
    run_id = write_run(session, watcher.campaign_id, watcher.version_id, now.isoformat(), now)
    if run_id is None:  # this instant was already written (cannot happen under the lock)
        raise RuntimeError(f"a run at {now.isoformat()} already exists for {watcher.name}")
    channels = spec.channel_list
    per_channel = [*channels] if spec.sends_on_every_channel else [None]
    base: dict[str, Any] = {
        "campaign_id": watcher.campaign_id,
        "campaign_version_id": watcher.version_id,
        "run_id": run_id,
        "category": spec.category,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "resend_on_ambiguous": spec.on_ambiguous == "resend",
        "enqueued_at": None,
        "not_before": None,
        "reason": None,
        "detail": None,
        "payload": {"segment": segment, "entered_at": now.isoformat()},
        "created_at": now,
        "updated_at": now,
    }
    rows = [
        {
            **base,
            "member_id": member_id,
            "dedupe_key": trigger_key(watcher.campaign_id, member_id, run_id, channel),
            "channels": channel or ",".join(channels),
            "channel": channel,
        }
        for member_id in members
        for channel in per_channel
    ]
    for chunk in chunked(rows, _CHUNK):
        insert_ignore_many(session, deliveries, chunk, ["dedupe_key"])
    session.execute(
        update(CampaignRun).where(CampaignRun.id == run_id).values(planned_count=len(rows))
    )
    return run_id


def recheck_triggered(
    session: Session,
    rt: Runtime,
    rows: Sequence[Delivery],
    members: Mapping[int, Member],
    consents: Mapping[int, Mapping[str, ConsentState]],
    now: datetime,
) -> list[Closed]:
    """The trigger, checked again at send time: a member who has left the watched segment
    since (as of its latest snapshot) is not sent a message about entering it, and one
    outside the campaign's own ``segment`` now is not sent either.

    Matters when a row waited (quiet hours, a cap, a paused campaign), and
    for a row released before its plan narrowed it (a sweep between the tick
    that wrote it and the plan job). A campaign ``segment`` the program no
    longer allows fails the version's rows (``rule_error``).
    """
    ended = _outside_campaign_segment(session, rt, rows, now)
    done = {closed.delivery_id for closed in ended}
    by_segment: dict[str, list[Delivery]] = {}
    for row in rows:
        name = (row.payload or {}).get("segment")
        if isinstance(name, str) and row.id not in done:
            by_segment.setdefault(name, []).append(row)
    for name, segment_rows in by_segment.items():
        segment_id = session.scalar(select(Segment.id).where(Segment.name == name))
        inside = set(
            session.scalars(
                select(SegmentMember.member_id).where(
                    SegmentMember.segment_id == segment_id,
                    SegmentMember.member_id.in_({row.member_id for row in segment_rows}),
                )
            )
        )
        ended.extend(
            Closed(
                row.id,
                DeliveryStatus.SUPPRESSED,
                "left_segment",
                f"left segment {name} before the message was sent",
            )
            for row in segment_rows
            if row.member_id not in inside
        )
    return ended


def plan_triggered(rt: Runtime, run_id: int, rule: Rule | None) -> PlanResult:
    """The plan job of a triggered run: its rows exist already; narrow them, enqueue, finish.

    A campaign's own ``segment`` narrows who is triggered: rows of members
    outside it are closed here (``suppressed``, reason ``not_in_segment``),
    where the program's declared attributes are at hand (``rule``, parsed
    by :func:`workers.planning.plan_run`).
    """
    now = utcnow()
    mine = (Delivery.run_id == run_id) & (Delivery.status == DeliveryStatus.PENDING)
    with rt.sessions.begin() as session:
        if rule is not None:
            inside = select(Member.id).where(
                Member.id == Delivery.member_id, audience_filter(rule, now=now)
            )
            session.execute(
                update(Delivery)
                .where(mine, ~exists(inside))
                .values(
                    status=DeliveryStatus.SUPPRESSED,
                    reason="not_in_segment",
                    detail="entered the watched segment, but not the campaign's segment",
                    updated_at=now,
                )
            )
        ids = sorted(
            session.scalars(
                update(Delivery)
                .where(mine, Delivery.enqueued_at.is_(None))
                .values(enqueued_at=now)
                .returning(Delivery.id)
            )
        )
    if rt.broker is not None:
        for batch in chunked(ids, rt.settings.batch_size):
            enqueue_deliver(rt.broker, batch)
    return finish_run(rt, run_id, RunStatus.PLANNED, len(ids))


def _outside_campaign_segment(
    session: Session, rt: Runtime, rows: Sequence[Delivery], now: datetime
) -> list[Closed]:
    """Rows whose member is not in their campaign's own ``segment`` now (one query a version)."""
    by_version: dict[int, list[Delivery]] = {}
    for row in rows:
        by_version.setdefault(row.campaign_version_id, []).append(row)
    ended: list[Closed] = []
    for version_id, version_rows in by_version.items():
        version = rt.version(version_id)
        try:
            rule = segment_rule(version.spec, rt.program)
        except RuleError as exc:
            ended.extend(rule_error_rows(version, version_rows, exc))
            continue
        if rule is None:
            continue
        inside = matching(session, rule, {row.member_id for row in version_rows}, now)
        ended.extend(
            Closed(
                row.id,
                DeliveryStatus.SUPPRESSED,
                "not_in_segment",
                "not in the campaign's segment when the message was due",
            )
            for row in version_rows
            if row.member_id not in inside
        )
    return ended
