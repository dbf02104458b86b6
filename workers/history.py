"""Why a member did or did not get a message: consents and recent deliveries with reasons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from store import Campaign, Consent, Delivery, Member

__all__ = ["ConsentLine", "DeliveryLine", "MemberHistory", "member_history"]


@dataclass(frozen=True)
class ConsentLine:
    channel: str
    status: str
    source: str
    updated_at: datetime


@dataclass(frozen=True)
class DeliveryLine:
    created_at: datetime
    campaign: str
    channel: str | None
    status: str
    reason: str | None
    detail: str | None
    not_before: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class MemberHistory:
    member_id: int
    external_id: str
    name: str | None
    time_zone: str | None
    consents: list[ConsentLine]
    deliveries: list[DeliveryLine]


def member_history(
    sessions: sessionmaker[Session],
    member: str,
    *,
    campaign: str | None = None,
    limit: int = 20,
) -> MemberHistory:
    """A member's consents and most recent deliveries, newest first.

    Args:
        member: the member's external id (or, failing that, internal id).
        campaign: only this campaign's deliveries.
        limit: how many deliveries at most.

    Raises:
        LookupError: no such member, or no such campaign.
    """
    with sessions() as session:
        conditions = [Member.external_id == member]
        if member.isdigit():
            conditions.append(Member.id == int(member))
        found = session.scalars(select(Member).where(or_(*conditions)).limit(1)).first()
        if found is None:
            raise LookupError(f"no member with external id {member!r}")
        stmt = (
            select(Delivery, Campaign.name)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Delivery.member_id == found.id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
        if campaign is not None:
            if session.scalar(select(Campaign.id).where(Campaign.name == campaign)) is None:
                raise LookupError(f"no campaign named {campaign!r}")
            stmt = stmt.where(Campaign.name == campaign)
        deliveries = [
            DeliveryLine(
                created_at=d.created_at,
                campaign=name,
                channel=d.channel,
                status=d.status,
                reason=d.reason,
                detail=d.detail,
                not_before=d.not_before,
                sent_at=d.sent_at,
            )
            for d, name in session.execute(stmt)
        ]
        consents = [
            ConsentLine(c.channel, c.status, c.source, c.updated_at)
            for c in session.scalars(
                select(Consent).where(Consent.member_id == found.id).order_by(Consent.channel)
            )
        ]
        return MemberHistory(
            found.id, found.external_id, found.name, found.time_zone, consents, deliveries
        )
