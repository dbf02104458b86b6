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
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session

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


def _due(session: Session, now: datetime, stale: datetime) -> list[int]:
    """The ids of open rows to enqueue again, at most ``SWEEP_LIMIT``, in id order.

    A row is due when its time has come (no ``not_before``, or past it) and
    no enqueue of it is live (never enqueued, or longer ago than a lease).
    Asked as one query, that OR of ORs gives PostgreSQL no index range to
    read: it read every open row, or the ledger whole in id order, on each
    sweep (2.2-2.4 s in a 5,300,000-row ledger with 1,000,000 rows in flight
    and 300,000 waiting for their members' local time). Asked as three
    disjoint kinds per status, each is a range of the index ``(status,
    enqueued_at, not_before)`` (migration 0009) read in its order, so a sweep
    reads the rows it finds and no others (18-22 ms there).
    """
    kinds: tuple[tuple[ColumnElement[bool], ...], ...] = (
        # enqueued longer ago than a lease: the job was lost
        (
            Delivery.enqueued_at < stale,
            or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
        ),
        # never enqueued (or released), nothing to wait for
        (Delivery.enqueued_at.is_(None), Delivery.not_before.is_(None)),
        # never enqueued (or released), and its time has come
        (Delivery.enqueued_at.is_(None), Delivery.not_before <= now),
    )
    due: list[int] = []
    for status in OPEN:
        for conditions in kinds:
            if len(due) >= SWEEP_LIMIT:
                break
            due += session.scalars(
                select(Delivery.id)
                .where(Delivery.status == status, *conditions)
                .order_by(Delivery.enqueued_at, Delivery.not_before)
                .limit(SWEEP_LIMIT - len(due))
            )
    return sorted(due)


def sweep(rt: Runtime) -> SweepResult:
    """Run the sweeps once; see the module docstring."""
    now = utcnow()
    stale = now - timedelta(seconds=rt.settings.lease_seconds)
    with rt.sessions.begin() as session:
        expired = expire_leases(session, now)

    with rt.sessions.begin() as session:
        due = _due(session, now, stale)
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
