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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import dramatiq
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    RunStatus,
    affected_rows,
    utcnow,
)

from .jobs import chunked, enqueue_deliver
from .ledger import OPEN

__all__ = ["CancelResult", "cancel_campaign", "pause_campaign", "resume_campaign"]

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
                    (RunStatus.SCHEDULED, RunStatus.PLANNING, RunStatus.PLANNED)
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
                .where(Delivery.campaign_id == campaign.id, Delivery.status.in_(OPEN))
                .values(
                    status=DeliveryStatus.DEFERRED,
                    reason="paused",
                    detail=f"campaign paused {now:%Y-%m-%d %H:%M}Z",
                    not_before=now + timedelta(days=3650),
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
