"""Bulk writes to the delivery ledger shared by the deliver job's steps.

Every write is an executemany UPDATE guarded by the row's current status (and,
after a claim, by the claim's owner token), so a row another worker has moved
on is never moved back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy.orm import Session

from store import Delivery, DeliveryStatus, utcnow

__all__ = [
    "OPEN",
    "DeliverResult",
    "closed_entry",
    "deferred_entry",
    "deliveries",
    "status_is",
    "write_closed",
    "write_deferred",
]

#: Rows a deliver job may still send.
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)

#: The deliveries table, for Core executemany UPDATEs.
deliveries = cast(Table, Delivery.__table__)


@dataclass
class DeliverResult:
    """Counts of what one deliver job did, by outcome."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n


def status_is(*statuses: str) -> Any:
    """``status = a OR status = b``: an IN list cannot be used with executemany."""
    return or_(*(deliveries.c.status == status for status in statuses))


def closed_entry(
    delivery_id: int, status: DeliveryStatus, reason: str, detail: str
) -> dict[str, Any]:
    return {"b_id": delivery_id, "b_status": status, "b_reason": reason, "b_detail": detail}


def write_closed(session: Session, entries: list[dict[str, Any]]) -> None:
    """Close open rows as suppressed or failed, with their reasons."""
    if not entries:
        return
    session.execute(
        update(deliveries)
        .where(deliveries.c.id == bindparam("b_id"), status_is(*OPEN))
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            detail=bindparam("b_detail"),
            updated_at=utcnow(),
        ),
        entries,
    )


def deferred_entry(delivery_id: int, until: datetime, reason: str, detail: str) -> dict[str, Any]:
    """One row for :func:`write_deferred`."""
    return {"b_id": delivery_id, "b_until": until, "b_reason": reason, "b_detail": detail}


def write_deferred(session: Session, entries: list[dict[str, Any]]) -> None:
    """Defer open rows to ``b_until`` with their reason; the sweeper picks them up when due."""
    if not entries:
        return
    session.execute(
        update(deliveries)
        .where(deliveries.c.id == bindparam("b_id"), status_is(*OPEN))
        .values(
            status=DeliveryStatus.DEFERRED,
            not_before=bindparam("b_until"),
            reason=bindparam("b_reason"),
            detail=bindparam("b_detail"),
            enqueued_at=None,
            updated_at=utcnow(),
        ),
        entries,
    )
