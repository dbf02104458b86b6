"""plan(run): turn a campaign run's audience into delivery rows, then deliver jobs.

The audience is read in pages of member ids in id order (keyset pagination:
``id > last ORDER BY id LIMIT n``). Each page becomes delivery rows written
with ``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING`` in the same transaction
that advances the run's ``planned_through`` cursor, and only after that commit
are deliver jobs enqueued for the new rows. So:

- a plan killed at any point resumes from the last committed page, and a page
  planned twice (two plan jobs for one run) writes each row once;
- a crash between the commit and the enqueue leaves rows ``pending`` with an
  ``enqueued_at``; the sweeper re-enqueues them once that is older than the lease.

Keyset pages rather than one long server-side cursor keep every transaction
short, which matters on SQLite (one writer) and for PostgreSQL's vacuum.
Members are not loaded here: consent, reachability and the channel are
decided by the deliver job, just before sending (DESIGN.md §4). A row that
must wait (a member-local wall time, a ``spread`` offset) is written
``deferred`` with its moment (:mod:`workers.timing`), for ``at`` and cron
runs alike.

A run whose campaign's ``segment`` the program no longer allows (the policy
file dropped or retyped an attribute it names) cannot plan until an operator
fixes one or the other: it ends ``failed`` at once, with the campaign, the
rule and the fix in its ``error`` and an error log, rather than failing every
retry and every re-plan of the sweeper. ``loyalcast campaigns replan NAME``
(:func:`workers.control.replan_campaign`) schedules it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select, update

from segments import Rule, RuleError, audience_filter, parse_rule
from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Member,
    RunStatus,
    affected_rows,
    utcnow,
)
from store.bulk import insert_ignore_many

from .campaigns import CampaignSpec
from .jobs import enqueue_deliver
from .ledger import HOLD, RUN_FAILED, deliveries
from .program import Program
from .recurrence import run_wall
from .runtime import LoadedVersion, Runtime
from .timing import RunTiming, row_timing

__all__ = ["PlanResult", "dedupe_key", "plan_run", "segment_rule"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PlanResult:
    """What one plan job did."""

    run_id: int
    written: int
    status: str


def dedupe_key(run_id: int, member_id: int, channel: str | None = None) -> str:
    """A broadcast's once-only key: (run, member), plus the channel for ``channels: all``."""
    key = f"broadcast:{run_id}:{member_id}"
    return f"{key}:{channel}" if channel else key


def segment_rule(spec: CampaignSpec, program: Program) -> Rule | None:
    """The campaign's own ``segment`` as ``program`` allows it now, or None without one.

    Raises:
        RuleError: the rule names an attribute ``program`` does not declare
            (or no longer as that type).
    """
    if spec.segment is None:
        return None
    return parse_rule(spec.segment, "segment", attributes=program.attributes)


def _failure_message(version: LoadedVersion, error: RuleError) -> str:
    """Why a run of ``version`` cannot plan, and how to go on (a failed run's ``error``)."""
    name = version.campaign_name
    return (
        f"campaign {name} v{version.version}: {error}; the program no longer allows this "
        f"rule (fix its attributes or the campaign, then: loyalcast campaigns replan {name})"
    )


def plan_run(rt: Runtime, run_id: int) -> PlanResult:
    """Write every delivery row of run ``run_id`` and enqueue deliver jobs for them.

    Raises:
        LookupError: the run does not exist.
    """
    with rt.sessions.begin() as session:
        run = session.get(CampaignRun, run_id)
        if run is None:
            raise LookupError(f"campaign run {run_id} does not exist")
        if run.status != RunStatus.PLANNING:
            return PlanResult(run_id, 0, run.status)
        campaign_status = session.scalar(
            select(Campaign.status).where(Campaign.id == run.campaign_id)
        )
        version_id, last = run.campaign_version_id, run.planned_through
        occurrence, due_at = run.occurrence, run.due_at
    if campaign_status == CampaignStatus.CANCELLED:
        return _finish(rt, run_id, RunStatus.CANCELLED, 0)

    version = rt.version(version_id)
    spec = version.spec
    try:
        rule = segment_rule(spec, rt.program)
    except RuleError as exc:
        return _fail(rt, run_id, version, exc)
    # Kinds whose audience is not a segment read in id order plan in their own
    # module, which builds on this one (hence the imports here).
    if spec.kind == "expiry_reminder":
        from .reminders import plan_reminders

        return plan_reminders(rt, run_id, rule)
    if spec.kind == "triggered":
        from .triggers import plan_triggered

        return plan_triggered(rt, run_id, rule)
    timing = RunTiming(run_id, due_at, run_wall(spec.schedule, occurrence))
    default_zone = rt.program.default_time_zone
    audience = audience_filter(rule)
    channels = spec.channel_list
    per_channel = spec.sends_on_every_channel
    page = rt.settings.batch_size
    rows_per_page = page // len(channels) if per_channel else page
    written = 0
    stopped = False

    while True:
        with rt.sessions.begin() as session:
            found = session.execute(
                select(Member.id, Member.time_zone)
                .where(audience, Member.id > last)
                .order_by(Member.id)
                .limit(max(rows_per_page, 1))
            )
            zones: dict[int, str | None] = {row.id: row.time_zone for row in found}
            ids = list(zones)
            if not ids:
                break
            now = utcnow()
            dialect = session.get_bind().dialect.name
            greatest = func.max if dialect == "sqlite" else func.greatest
            # Advance the cursor first, only while the run is still planning: a
            # cancelled run takes no more rows, and this page's lock on the run
            # row orders it against a concurrent cancel (workers/control.py).
            still_planning = affected_rows(
                session.execute(
                    update(CampaignRun)
                    .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.PLANNING)
                    .values(
                        planned_through=greatest(CampaignRun.planned_through, ids[-1]),
                        claimed_at=now,
                    )
                )
            )
            if not still_planning:
                stopped = True
                break
            base_row = {
                "campaign_id": version.campaign_id,
                "campaign_version_id": version.id,
                "run_id": run_id,
                "category": spec.category,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "resend_on_ambiguous": spec.on_ambiguous == "resend",
                "enqueued_at": now,
                "not_before": None,
                "reason": None,
                "detail": None,
                "created_at": now,
                "updated_at": now,
            }
            rows: list[dict[str, Any]] = []
            for member_id in ids:
                when = row_timing(
                    spec.schedule, timing, member_id, zones[member_id], default_zone, now
                )
                base = {**base_row, **when}
                if per_channel:
                    rows.extend(
                        {
                            **base,
                            "member_id": member_id,
                            "dedupe_key": dedupe_key(run_id, member_id, channel),
                            "channels": channel,
                            "channel": channel,
                        }
                        for channel in channels
                    )
                else:
                    rows.append(
                        {
                            **base,
                            "member_id": member_id,
                            "dedupe_key": dedupe_key(run_id, member_id),
                            "channels": ",".join(channels),
                            "channel": None,
                        }
                    )
            # RETURNING yields only the rows inserted: a conflict returns none.
            inserted = insert_ignore_many(
                session, deliveries, rows, ["dedupe_key"], [deliveries.c.id, deliveries.c.status]
            )
            new_ids = [i for i, status in inserted if status == DeliveryStatus.PENDING]
            written_now = len(inserted)
            last = ids[-1]
            session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id)
                .values(planned_count=CampaignRun.planned_count + written_now)
            )
        written += written_now
        if rt.broker is not None:
            enqueue_deliver(rt.broker, sorted(new_ids))
    if stopped:
        log.info("planning stopped: the run is no longer planning", run_id=run_id)
        return PlanResult(run_id, written, "stopped")
    result = _finish(rt, run_id, RunStatus.PLANNED, written)
    log.info("run planned", run_id=run_id, written=written)
    return result


def _fail(rt: Runtime, run_id: int, version: LoadedVersion, error: RuleError) -> PlanResult:
    """End run ``run_id`` ``failed``: planning cannot go on until an operator fixes ``error``.

    Rows the run holds that no plan has released (``pending``, never
    enqueued: a triggered run's, written before its plan narrows them) wait
    ``deferred`` with reason ``run_failed`` until it is planned again. Rows an
    earlier plan page released are left to go: they were planned under the
    rule as it was.
    """
    now = utcnow()
    message = _failure_message(version, error)
    with rt.sessions.begin() as session:
        failed = affected_rows(
            session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.PLANNING)
                .values(status=RunStatus.FAILED, error=message)
            )
        )
        if failed:
            session.execute(
                update(Delivery)
                .where(
                    Delivery.run_id == run_id,
                    Delivery.status == DeliveryStatus.PENDING,
                    Delivery.enqueued_at.is_(None),
                )
                .values(
                    status=DeliveryStatus.DEFERRED,
                    reason=RUN_FAILED,
                    detail=f"run {run_id} failed to plan: {message}",
                    not_before=now + HOLD,
                    updated_at=now,
                )
            )
    if not failed:
        return PlanResult(run_id, 0, "stopped")
    log.error(
        "run failed: its segment rule no longer parses",
        run_id=run_id,
        campaign=version.campaign_name,
        version=version.version,
        rule=error.path,
        problem=error.problem,
        fix=f"loyalcast campaigns replan {version.campaign_name}",
    )
    return PlanResult(run_id, 0, RunStatus.FAILED)


def _finish(rt: Runtime, run_id: int, status: RunStatus, written: int) -> PlanResult:
    values: dict[str, object] = {"status": status}
    if status == RunStatus.PLANNED:
        values["planned_at"] = utcnow()
    with rt.sessions.begin() as session:
        session.execute(
            update(CampaignRun)
            .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.PLANNING)
            .values(**values)
        )
    return PlanResult(run_id, written, status)
