"""sweep(): the safety net that makes the store, not the broker, the source of truth.

Run on a timer by the scheduler leader (as a job on the ``maintenance`` queue):

1. ``sending`` rows whose lease expired become ``unknown`` (or ``pending``
   with ``on_ambiguous: resend``): their worker died mid-send.
2. Open rows whose enqueue is older than the lease (the job was lost with
   Redis, or never sent because a process died after committing the rows),
   and ``deferred`` rows whose time has come, are enqueued again in batches.
3. Runs stuck in ``planning`` (no planning progress for a lease) get a new
   plan job; planning resumes from its cursor.
4. Planned runs with no open row left are marked completed, and welcome
   sequence enrollments with no open row left are marked finished
   (:func:`workers.sequence_steps.finish_enrollments`).

Every step is a conditional UPDATE, so two sweeps at once change nothing twice,
and a row enqueued twice is still claimed once by the deliver job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import exists, or_, select, update

from store import CampaignRun, Delivery, DeliveryStatus, RunStatus, affected_rows, utcnow

from .jobs import chunked, enqueue_deliver, enqueue_plan
from .leases import expire_leases
from .runtime import Runtime
from .sequence_steps import finish_enrollments

__all__ = ["SWEEP_LIMIT", "SweepResult", "sweep"]

log = structlog.get_logger(__name__)

#: Rows re-enqueued per sweep at most; the next sweep takes the rest.
SWEEP_LIMIT = 100_000
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep changed."""

    expired_leases: int
    requeued: int
    replanned: int
    completed_runs: int
    finished_enrollments: int = 0


def sweep(rt: Runtime) -> SweepResult:
    """Run the sweeps once; see the module docstring."""
    now = utcnow()
    stale = now - timedelta(seconds=rt.settings.lease_seconds)
    with rt.sessions.begin() as session:
        expired = expire_leases(session, now)

    with rt.sessions.begin() as session:
        due = list(
            session.scalars(
                select(Delivery.id)
                .where(
                    Delivery.status.in_(OPEN),
                    or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
                    or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < stale),
                )
                .order_by(Delivery.id)
                .limit(SWEEP_LIMIT)
            )
        )
        for chunk in chunked(due, 1000):
            session.execute(update(Delivery).where(Delivery.id.in_(chunk)).values(enqueued_at=now))
    if rt.broker is not None:
        for chunk in chunked(due, rt.settings.batch_size):
            enqueue_deliver(rt.broker, chunk)

    with rt.sessions.begin() as session:
        stuck = list(
            session.scalars(
                update(CampaignRun)
                .where(
                    CampaignRun.status == RunStatus.PLANNING,
                    or_(CampaignRun.claimed_at.is_(None), CampaignRun.claimed_at < stale),
                )
                .values(claimed_at=now)
                .returning(CampaignRun.id)
            )
        )
    if rt.broker is not None:
        for run_id in stuck:
            enqueue_plan(rt.broker, run_id)

    open_statuses = [s for s in DeliveryStatus if s.is_open]
    with rt.sessions.begin() as session:
        completed = affected_rows(
            session.execute(
                update(CampaignRun)
                .where(
                    CampaignRun.status == RunStatus.PLANNED,
                    ~exists().where(
                        Delivery.run_id == CampaignRun.id, Delivery.status.in_(open_statuses)
                    ),
                )
                .values(status=RunStatus.COMPLETED, completed_at=now)
            )
        )
    with rt.sessions.begin() as session:
        finished = finish_enrollments(session, now)
    result = SweepResult(expired, len(due), len(stuck), completed, finished)
    if any(result.__dict__.values()):
        log.info("swept", **result.__dict__)
    return result
