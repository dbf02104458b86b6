"""Cancel, pause and resume a campaign, effective at once on every worker.

The deliver job only claims rows of an **active** campaign (the claim UPDATE
checks it), so once a status change commits no worker starts another send.

- :func:`cancel_campaign` marks the campaign cancelled, suppresses every open
  delivery (reason ``cancelled``), cancels its scheduled runs, then waits until
  none of its deliveries is still ``sending``: chunks already handed to a
  provider are recorded before it returns. When it returns, nothing more of
  the campaign is sent. A row stuck ``sending`` at a dead worker stops the
  wait at its lease's expiry; that row ends ``unknown`` and is never sent.
- :func:`pause_campaign` stops sending and planning; open deliveries wait
  (``deferred``, reason ``paused``), scheduled runs are not claimed.
- :func:`resume_campaign` makes them due again and re-enqueues them.
- :func:`replan_campaign` schedules its ``failed`` runs again (a rule the
  program no longer allowed, :mod:`workers.planning`), once the program
  allows the campaign's rules: the scheduler's next tick claims them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dramatiq
import structlog
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from segments import RuleError
from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    Delivery,
    DeliveryStatus,
    RunStatus,
    affected_rows,
    utcnow,
)

from .campaigns import CampaignSpec
from .jobs import chunked, enqueue_deliver
from .ledger import HOLD, OPEN, RUN_FAILED
from .planning import segment_rule
from .program import Program

__all__ = [
    "CancelResult",
    "cancel_campaign",
    "pause_campaign",
    "replan_campaign",
    "resume_campaign",
]

log = structlog.get_logger(__name__)

#: How often cancel looks again for deliveries still being sent.
POLL = 0.1


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did."""

    suppressed: int
    """Open deliveries that will never be sent."""
    waited: float
    """Seconds spent waiting for chunks already at a provider."""
    stranded: int
    """Deliveries left ``sending`` by a dead worker (they end ``unknown``)."""


def _campaign(session: Session, name: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name).with_for_update())
    if campaign is None:
        raise LookupError(f"no campaign named {name!r}")
    return campaign


def cancel_campaign(
    sessions: sessionmaker[Session], name: str, *, timeout: float = 600.0
) -> CancelResult:
    """Cancel campaign ``name``; return once nothing more of it can be sent.

    Raises:
        LookupError: no such campaign.
    """
    started = time.monotonic()
    with sessions.begin() as session:
        campaign = _campaign(session, name)
        campaign.status = CampaignStatus.CANCELLED
        campaign_id = campaign.id
    now = utcnow()
    with sessions.begin() as session:
        # Runs first: this waits for a plan page in progress (it holds the run
        # row) and stops later pages; the deliveries UPDATE then sees them all.
        session.execute(
            update(CampaignRun)
            .where(
                CampaignRun.campaign_id == campaign_id,
                CampaignRun.status.in_(
                    (RunStatus.SCHEDULED, RunStatus.PLANNING, RunStatus.PLANNED, RunStatus.FAILED)
                ),
            )
            .values(status=RunStatus.CANCELLED)
        )
        suppressed = affected_rows(
            session.execute(
                update(Delivery)
                .where(Delivery.campaign_id == campaign_id, Delivery.status.in_(OPEN))
                .values(
                    status=DeliveryStatus.SUPPRESSED,
                    reason="cancelled",
                    detail=f"campaign cancelled {now:%Y-%m-%d %H:%M}Z",
                    updated_at=now,
                )
            )
        )
    deadline = started + timeout
    stranded = 0
    while True:
        with sessions() as session:
            live, stranded = _sending(session, campaign_id)
        if live == 0 or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    return CancelResult(suppressed, time.monotonic() - started, stranded)


def _sending(session: Session, campaign_id: int) -> tuple[int, int]:
    """(rows sending under a live lease, rows sending under an expired one)."""
    now = utcnow()
    live, expired = session.execute(
        select(
            func.count().filter(Delivery.lease_until >= now),
            func.count().filter(Delivery.lease_until < now),
        ).where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.SENDING)
    ).one()
    return int(live), int(expired)


def pause_campaign(sessions: sessionmaker[Session], name: str) -> int:
    """Pause campaign ``name``; return how many open deliveries now wait.

    Raises:
        LookupError: no such campaign; ValueError: it is cancelled.
    """
    now = utcnow()
    with sessions.begin() as session:
        campaign = _campaign(session, name)
        if campaign.status == CampaignStatus.CANCELLED:
            raise ValueError(f"campaign {name!r} is cancelled")
        campaign.status = CampaignStatus.PAUSED
        return affected_rows(
            session.execute(
                update(Delivery)
                .where(
                    Delivery.campaign_id == campaign.id,
                    Delivery.status.in_(OPEN),
                    # Rows a failed run holds stay held: resume must not release them.
                    or_(Delivery.reason.is_(None), Delivery.reason != RUN_FAILED),
                )
                .values(
                    status=DeliveryStatus.DEFERRED,
                    reason="paused",
                    detail=f"campaign paused {now:%Y-%m-%d %H:%M}Z",
                    not_before=now + HOLD,
                    enqueued_at=None,
                    updated_at=now,
                )
            )
        )


def resume_campaign(
    sessions: sessionmaker[Session], name: str, broker: dramatiq.Broker | None = None
) -> int:
    """Resume campaign ``name``; its paused deliveries are due at once. Returns how many.

    With ``broker`` they are enqueued now; without, the sweeper picks them up.

    Raises:
        LookupError: no such campaign; ValueError: it is cancelled.
    """
    now = utcnow()
    with sessions.begin() as session:
        campaign = _campaign(session, name)
        if campaign.status == CampaignStatus.CANCELLED:
            raise ValueError(f"campaign {name!r} is cancelled and cannot resume")
        campaign.status = CampaignStatus.ACTIVE
        ids = list(
            session.scalars(
                update(Delivery)
                .where(
                    Delivery.campaign_id == campaign.id,
                    Delivery.status == DeliveryStatus.DEFERRED,
                    Delivery.reason == "paused",
                )
                .values(
                    not_before=now,
                    reason=None,
                    detail=None,
                    enqueued_at=now if broker is not None else None,
                    updated_at=now,
                )
                .returning(Delivery.id)
            )
        )
    if broker is not None:
        for batch in chunked(sorted(ids), 1000):
            enqueue_deliver(broker, batch)
    return len(ids)


def replan_campaign(sessions: sessionmaker[Session], name: str, program: Program) -> list[int]:
    """Schedule campaign ``name``'s failed runs again; return their ids (none: nothing failed).

    A run none of whose rows was released to send takes the campaign's
    current version (its held rows with it), as an unstarted run does when
    the campaign is updated; one with rows out keeps its own. Each run's rule
    is checked against ``program`` first (it must be the policy file the
    workers run with: restart them after changing it), and nothing changes if
    one still fails. Rows a failed run held (``run_failed``) go back to its
    plan. A run scheduled again is due at once: the scheduler's next tick
    claims it, unless the campaign is paused.

    Raises:
        LookupError: no such campaign.
        ValueError: it is cancelled, or a run's rule is still not allowed.
    """
    with sessions.begin() as session:
        campaign = _campaign(session, name)
        if campaign.status == CampaignStatus.CANCELLED:
            raise ValueError(f"campaign {name!r} is cancelled")
        held = (Delivery.status == DeliveryStatus.DEFERRED) & (Delivery.reason == RUN_FAILED)
        not_held = or_(
            Delivery.status != DeliveryStatus.DEFERRED,
            Delivery.reason.is_(None),  # NOT (... = NULL) would be NULL, not true
            Delivery.reason != RUN_FAILED,
        )
        released = exists().where(Delivery.run_id == CampaignRun.id, not_held)
        runs = session.execute(
            select(CampaignRun.id, CampaignRun.campaign_version_id, released)
            .where(CampaignRun.campaign_id == campaign.id, CampaignRun.status == RunStatus.FAILED)
            .order_by(CampaignRun.id)
        ).all()
        current = session.scalar(
            select(CampaignVersion.id).where(
                CampaignVersion.campaign_id == campaign.id,
                CampaignVersion.version == campaign.current_version,
            )
        )
        chosen = {run_id: own if out else current for run_id, own, out in runs}
        for number, spec in session.execute(
            select(CampaignVersion.version, CampaignVersion.spec)
            .where(CampaignVersion.id.in_(set(chosen.values())))
            .order_by(CampaignVersion.version)
        ):
            try:
                segment_rule(CampaignSpec.model_validate(spec), program)
            except RuleError as exc:
                raise ValueError(
                    f"campaign {name} v{number}: {exc}; the program still does not allow "
                    "this rule: declare the attribute again (and restart the workers) or "
                    "update the campaign; no run was scheduled again"
                ) from None
        for run_id, version_id in chosen.items():
            session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id)
                .values(
                    status=RunStatus.SCHEDULED,
                    campaign_version_id=version_id,
                    claimed_at=None,
                    error=None,
                )
            )
            session.execute(
                update(Delivery)
                .where(Delivery.run_id == run_id, held)
                .values(
                    status=DeliveryStatus.PENDING,
                    campaign_version_id=version_id,
                    reason=None,
                    detail=None,
                    not_before=None,
                    enqueued_at=None,
                    updated_at=utcnow(),
                )
            )
    if chosen:
        log.info("failed runs scheduled again", campaign=name, runs=sorted(chosen))
    return sorted(chosen)
