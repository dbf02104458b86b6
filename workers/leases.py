"""Expired ``sending`` leases: the one place that decides what an ambiguous send becomes.

A row is ``sending`` only while a worker holds its lease. When the lease has
expired the worker died or hung between claiming the row and recording the
provider's answer, so nobody knows whether the provider has the message. The
row becomes ``unknown`` and is never sent again, unless its campaign said
``on_ambiguous: resend``, in which case it goes back to ``pending``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from store import Delivery, DeliveryStatus, affected_rows
from store.bulk import among

__all__ = ["LEASE_EXPIRED_DETAIL", "expire_leases"]

LEASE_EXPIRED_DETAIL = "the worker sending it stopped before recording the outcome"


def expire_leases(session: Session, now: datetime, ids: Sequence[int] | None = None) -> int:
    """Resolve expired leases (of ``ids``, or of every row); return how many rows changed."""
    expired = [Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now]
    if ids is not None:
        expired.append(among(session, Delivery.id, ids))
    unknown = session.execute(
        update(Delivery)
        .where(*expired, Delivery.resend_on_ambiguous.is_(False))
        .values(
            status=DeliveryStatus.UNKNOWN,
            reason="lease_expired",
            detail=LEASE_EXPIRED_DETAIL,
            updated_at=now,
        )
    )
    resend = session.execute(
        update(Delivery)
        .where(*expired, Delivery.resend_on_ambiguous.is_(True))
        .values(
            status=DeliveryStatus.PENDING,
            lease_until=None,
            lease_owner=None,
            enqueued_at=None,
            updated_at=now,
        )
    )
    return affected_rows(unknown) + affected_rows(resend)
