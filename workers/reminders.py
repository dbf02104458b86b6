"""Expiry reminders (``kind: expiry_reminder``): one run a day, one message per deadline and lead.

"120 points expire on 3 Dec", 30, 7 and 1 days before, never after the points
were redeemed (DESIGN.md). Three parts, each plugged into a seam:

The day's run (:func:`make_reminder_run`, a run maker of :mod:`workers.occurrences`)
    Each scheduler tick writes the campaign's run for today, the ISO date in
    the program's default time zone, due at once (a day's start, or now if
    later). Only today's run is written: after downtime the missed days are
    not replayed one by one, today's plan catches up instead.

Planning (:func:`plan_reminders`, dispatched by :func:`workers.planning.plan_run`)
    Streams :func:`segments.expiry.due_reminders` with ``catch_up=True`` for
    the run's day (or today, if the plan runs late): for each member and
    member-local expiry date the most urgent lead whose day has come, never
    on or after the expiry date, with ``min_points`` applied to the points
    summed over the lots expiring that day. After 10 days of downtime a
    deadline 5 days away gets the 7-day reminder only. The campaign's
    ``segment`` narrows who is reminded. Rows are keyed
    ``expiry:<campaign>:<member>:<expiry date>:<lead days>`` (plus
    ``:<channel>`` for ``channels: all``) and written with INSERT ... ON
    CONFLICT DO NOTHING in chunks through the streaming session, all in one
    transaction that also marks the run planned; deliver jobs are enqueued
    after its commit. A plan killed midway leaves nothing and is simply run
    again; a cancel seen between chunks (or before the final mark) rolls it
    all back. On SQLite that one transaction holds the write lock while it
    streams (:mod:`store.engine`): other writers wait for it.

    A campaign that may send direct mail plans further ahead: every reminder
    whose postal drop date has come (:mod:`workers.reminder_dates`), so the
    piece is exported early enough to arrive by its lead date (catch-up then
    applies as of today, and each later lead date in that window is planned
    as it is). The row is still one per (member, expiry date, lead) and the
    channel is still chosen at send time in the campaign's preference order;
    if that choice is not direct mail, the message waits in the store until
    its lead date begins in the member's zone (``deferred``, reason
    ``scheduled``). Every reminder keeps that rule: none arrives before its
    lead date in the member's zone.

At send time (:mod:`workers.reminder_recheck`, a check of :mod:`workers.rechecks`)
    One query per batch recomputes each member's unredeemed points expiring
    on the row's local date. Expired (``expires_at`` passed) or below
    ``min_points`` (redeemed since): ``suppressed``, reason
    ``no_longer_due``, and no provider is called. Otherwise the payload takes
    the current amount and the days really left, so the message states what
    is expiring now. Consent, quiet hours and caps follow as for every
    message; a capped reminder waits for a free slot before its deadline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from segments import Rule, audience_filter
from segments.expiry import DueReminder, due_reminders, iter_expiring
from store import (
    Campaign,
    CampaignRun,
    DeliveryStatus,
    Member,
    RunStatus,
    affected_rows,
    utcnow,
)
from store.bulk import insert_ignore_many

from .campaigns import CampaignSpec
from .jobs import chunked, enqueue_deliver
from .ledger import deliveries
from .planning import PlanResult
from .program import Program
from .quiet_hours import local_midnight, resolve_zone
from .reminder_dates import POSTAL_CHANNEL, planning_horizon
from .runs import write_run
from .runtime import LoadedVersion, Runtime

__all__ = ["make_reminder_run", "plan_reminders", "reminder_key"]

log = structlog.get_logger(__name__)

_DAY = timedelta(days=1)


def reminder_key(
    campaign_id: int, member_id: int, expiry_date: date, lead_days: int, channel: str | None = None
) -> str:
    """A reminder's once-only key: (campaign, member, expiry date, lead), plus the channel for
    ``channels: all``."""
    key = f"expiry:{campaign_id}:{member_id}:{expiry_date.isoformat()}:{lead_days}"
    return f"{key}:{channel}" if channel else key


# -- the day's run ---------------------------------------------------------------------


def make_reminder_run(
    session: Session,
    campaign: Campaign,
    version_id: int,
    spec: CampaignSpec,
    now: datetime,
    program: Program | None = None,
) -> int:
    """Write today's run of an expiry-reminder campaign unless it exists; 1 when new, else 0.

    The day is the date in the program's time zone (the scheduler passes the
    program it was started with).
    """
    zone = resolve_zone((program or Program.default()).default_time_zone)
    today = now.astimezone(zone).date()
    due_at = max(local_midnight(today, zone), now)
    return int(write_run(session, campaign.id, version_id, today.isoformat(), due_at) is not None)


# -- planning --------------------------------------------------------------------------


class _Stopped(Exception):
    """The run stopped planning (cancelled) while its rows were being written."""


@dataclass(frozen=True)
class _Window:
    """Plan every reminder whose lead date is at most ``last``, as on day ``first``."""

    first: date
    last: date


def _window(occurrence: str, spec: CampaignSpec, program: Program, now: datetime) -> _Window:
    today = now.astimezone(resolve_zone(program.default_time_zone)).date()
    first = max(date.fromisoformat(occurrence), today)
    if POSTAL_CHANNEL not in spec.channel_list:
        return _Window(first, first)
    return _Window(first, planning_horizon(first, program.postal_lead_business_days))


def _due(
    session: Session, window: _Window, spec: CampaignSpec, program: Program
) -> Iterator[DueReminder]:
    """The reminders due over ``window``, in member order.

    A one-day window is :func:`due_reminders` with catch-up. Over a longer one
    (postal planning) a deadline gets the reminder catch-up gives on the first
    day, plus every lead whose lead date falls on a later day of the window:
    each row then waits for its own lead date, or is exported at once.
    """
    leads = spec.lead_days or []
    options: dict[str, Any] = {
        "min_points": spec.reminder_min_points,
        "default_time_zone": program.default_time_zone,
    }
    if window.first == window.last:
        yield from due_reminders(session, window.first, leads, catch_up=True, **options)
        return
    start, end = window.first + _DAY, window.last + max(leads) * _DAY
    for due in iter_expiring(session, start, end, **options):
        for lead in _leads_over(due.expiry_date, window, leads):
            yield DueReminder(
                member_id=due.member_id,
                expiry_date=due.expiry_date,
                lead_days=lead,
                points=due.points,
                expires_at=due.expires_at,
            )


def _leads_over(expiry_date: date, window: _Window, leads: Sequence[int]) -> list[int]:
    """The leads of ``expiry_date`` due over ``window`` (see :func:`_due`), least urgent first."""
    left = (expiry_date - window.first).days
    found = {lead for lead in leads if window.first < expiry_date - lead * _DAY <= window.last}
    caught_up = [lead for lead in leads if lead >= left]
    if left >= 1 and caught_up:
        found.add(min(caught_up))
    return sorted(found, reverse=True)


def plan_reminders(rt: Runtime, run_id: int, rule: Rule | None) -> PlanResult:
    """Write the delivery rows of an expiry-reminder run and enqueue deliver jobs for them.

    ``rule`` is the campaign's own segment, parsed by :func:`workers.planning.plan_run`.
    """
    with rt.sessions.begin() as session:  # claimed_at: the sweeper leaves this plan its lease
        run = session.execute(
            update(CampaignRun)
            .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.PLANNING)
            .values(claimed_at=utcnow())
            .returning(CampaignRun.occurrence, CampaignRun.campaign_version_id)
        ).one_or_none()
    if run is None:
        return PlanResult(run_id, 0, "stopped")
    version = rt.version(run.campaign_version_id)  # outside any transaction (SQLite)
    now = utcnow()
    window = _window(run.occurrence, version.spec, rt.program, now)
    written = 0
    batches: list[list[int]] = []
    try:
        with rt.sessions.begin() as session:
            for new_ids in _write(session, rt, run_id, version, window, rule):
                written += len(new_ids)
                batches.append(new_ids)
            planned = session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.PLANNING)
                .values(status=RunStatus.PLANNED, planned_at=utcnow(), planned_count=written)
            )
            if not affected_rows(planned):
                raise _Stopped
    except _Stopped:
        log.info("planning stopped: the run is no longer planning", run_id=run_id)
        return PlanResult(run_id, 0, "stopped")
    if rt.broker is not None:
        for new_ids in batches:
            enqueue_deliver(rt.broker, new_ids)
    log.info(
        "reminders planned",
        run_id=run_id,
        written=written,
        lead_dates=f"{window.first.isoformat()}..{window.last.isoformat()}",
    )
    return PlanResult(run_id, written, RunStatus.PLANNED)


def _write(
    session: Session,
    rt: Runtime,
    run_id: int,
    version: LoadedVersion,
    window: _Window,
    rule: Rule | None,
) -> Iterator[list[int]]:
    """Write the rows chunk by chunk through ``session``; yield each chunk's new ids."""
    spec = version.spec
    channels = spec.channel_list
    per_channel = spec.sends_on_every_channel
    batch = rt.settings.batch_size
    size = max(batch // len(channels) if per_channel else batch, 1)
    for chunk in chunked(_due(session, window, spec, rt.program), size):
        status = session.scalar(select(CampaignRun.status).where(CampaignRun.id == run_id))
        if status != RunStatus.PLANNING:
            raise _Stopped
        now = utcnow()
        if rule is not None:
            wanted = {due.member_id for due in chunk}
            allowed = set(
                session.scalars(
                    select(Member.id).where(audience_filter(rule, now=now), Member.id.in_(wanted))
                )
            )
            chunk = [due for due in chunk if due.member_id in allowed]
        rows = [
            {**_base_row(version, run_id, now), **row}
            for due in chunk
            for row in _rows_of(version.campaign_id, due, channels, per_channel)
        ]
        if not rows:
            continue
        inserted = insert_ignore_many(session, deliveries, rows, ["dedupe_key"], [deliveries.c.id])
        new_ids = sorted(delivery_id for (delivery_id,) in inserted)
        if new_ids:
            yield new_ids


def _base_row(version: LoadedVersion, run_id: int, now: datetime) -> dict[str, Any]:
    return {
        "campaign_id": version.campaign_id,
        "campaign_version_id": version.id,
        "run_id": run_id,
        "enrollment_id": None,
        "category": version.spec.category,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "resend_on_ambiguous": version.spec.on_ambiguous == "resend",
        "enqueued_at": now,
        "not_before": None,
        "reason": None,
        "detail": None,
        "created_at": now,
        "updated_at": now,
    }


def _rows_of(
    campaign_id: int, due: DueReminder, channels: Sequence[str], per_channel: bool
) -> list[dict[str, Any]]:
    payload = {
        "points": due.points,
        "expiry_date": due.expiry_date.isoformat(),
        "expires_at": due.expires_at.astimezone(UTC).isoformat(),
        "lead_days": due.lead_days,
    }
    key = (campaign_id, due.member_id, due.expiry_date, due.lead_days)
    if per_channel:
        return [
            {
                "member_id": due.member_id,
                "dedupe_key": reminder_key(*key, channel),
                "channels": channel,
                "channel": channel,
                "payload": payload,
            }
            for channel in channels
        ]
    return [
        {
            "member_id": due.member_id,
            "dedupe_key": reminder_key(*key),
            "channels": ",".join(channels),
            "channel": None,
            "payload": payload,
        }
    ]
