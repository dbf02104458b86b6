"""Driving failed deliveries again, still once only.

``loyalcast deliveries retry --campaign NAME`` reopens a campaign's ``failed``
deliveries that never reached a provider (no provider message id): retries
exhausted during an outage, or a refusal whose cause has been fixed. They are
the same rows with the same dedupe keys, so a member still gets each message
at most once; each keeps the campaign version it was planned with. Deliveries
a provider accepted and later reported undelivered are left alone: they went
out once.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from store import Campaign, CampaignRun, Delivery, DeliveryStatus, RunStatus, utcnow

from .jobs import chunked, enqueue_deliver

__all__ = ["RetryResult", "retry_failed"]


@dataclass(frozen=True)
class RetryResult:
    reopened: int
    left_alone: int
    """Failed after a provider accepted them (undelivered): not sent again."""


def retry_failed(
    sessions: sessionmaker[Session],
    campaign: str,
    *,
    reason: str | None = None,
    broker: dramatiq.Broker | None = None,
) -> RetryResult:
    """Reopen ``campaign``'s failed deliveries (optionally only those with ``reason``).

    Raises:
        LookupError: no such campaign.
    """
    now = utcnow()
    with sessions.begin() as session:
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.name == campaign))
        if campaign_id is None:
            raise LookupError(f"no campaign named {campaign!r}")
        failed = [Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.FAILED]
        if reason is not None:
            failed.append(Delivery.reason == reason)
        left_alone = (
            session.scalar(
                select(func.count()).where(*failed, Delivery.provider_message_id.is_not(None))
            )
            or 0
        )
        reopened = list(
            session.execute(
                update(Delivery)
                .where(*failed, Delivery.provider_message_id.is_(None))
                .values(
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    reason=None,
                    detail=None,
                    not_before=None,
                    lease_owner=None,
                    enqueued_at=now if broker is not None else None,
                    updated_at=now,
                )
                .returning(Delivery.id, Delivery.run_id)
            ).all()
        )
        runs = {run_id for _, run_id in reopened if run_id is not None}
        if runs:
            session.execute(
                update(CampaignRun)
                .where(CampaignRun.id.in_(runs), CampaignRun.status == RunStatus.COMPLETED)
                .values(status=RunStatus.PLANNED, completed_at=None)
            )
    if broker is not None:
        for batch in chunked(sorted(i for i, _ in reopened), 1000):
            enqueue_deliver(broker, batch)
    return RetryResult(len(reopened), int(left_alone))
