"""The ledger's side of frequency caps: the deliveries that hold a cap slot.

When Redis has lost a member's counters, :class:`workers.caps.CapCounter`
rebuilds them from these rows before it trusts them again (DESIGN.md §5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import Delivery, DeliveryStatus

__all__ = ["COUNTED_STATUSES", "Ledger", "LedgerEntry", "ledger_from", "recent_deliveries"]

_LEDGER_CHUNK = 500

#: Ledger statuses that hold a cap slot: the message went, or may have.
COUNTED_STATUSES = (
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNKNOWN,
)


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """A delivery that holds a cap slot, as the ledger records it."""

    member_id: int
    channel: str
    category: str
    delivery_id: int
    at: datetime


#: ``(member_ids, since) -> entries``: the members' counted deliveries at or after ``since``.
Ledger = Callable[[Sequence[int], datetime], list[LedgerEntry]]


def recent_deliveries(
    session: Session, member_ids: Sequence[int], since: datetime
) -> list[LedgerEntry]:
    """The members' deliveries that hold a slot, at ``sent_at`` (else ``updated_at``) >= since."""
    at = func.coalesce(Delivery.sent_at, Delivery.updated_at).label("at")
    columns = (Delivery.member_id, Delivery.channel, Delivery.category, Delivery.id, at)
    ids = sorted(set(member_ids))
    entries: list[LedgerEntry] = []
    for i in range(0, len(ids), _LEDGER_CHUNK):
        rows = session.execute(
            select(*columns).where(
                Delivery.member_id.in_(ids[i : i + _LEDGER_CHUNK]),
                Delivery.status.in_(COUNTED_STATUSES),
                Delivery.channel.is_not(None),
                at >= since,
            )
        )
        entries += [
            LedgerEntry(member_id=m, channel=str(ch), category=cat, delivery_id=d, at=when)
            for m, ch, cat, d, when in rows
        ]
    return entries


def ledger_from(sessions: Callable[[], Session]) -> Ledger:
    """A :data:`Ledger` that opens a session from ``sessions`` (a sessionmaker) per call."""

    def ledger(member_ids: Sequence[int], since: datetime) -> list[LedgerEntry]:
        with sessions() as session:
            return recent_deliveries(session, member_ids, since)

    return ledger
