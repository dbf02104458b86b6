"""The send-time check of expiry reminders: are the points still there, and how many?

Registered in :mod:`workers.rechecks` for ``kind: expiry_reminder``; the
deliver job runs it right after loading a batch, in a transaction of its own
(DESIGN.md §4: the trigger still true). One query for the batch reads its
members' unredeemed lots that have not expired; each lot counts on its local
date in the member's zone, exactly as :mod:`segments.expiry` counted it when
the reminder was planned. A row then:

- ends ``suppressed``, reason ``no_longer_due``, when its points expired
  (``expired: ...``) or fewer than ``min_points`` are left on that date
  (``redeemed: ...``): no provider is called;
- otherwise has its payload refreshed, in the row and in the ledger, with the
  points expiring now, the earliest instant they go and the days really left,
  so the message states what is true when it is sent.

Consent, quiet hours, the lead-date wait and caps come after, in
:func:`workers.compose.compose`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from store import Delivery, DeliveryStatus, Member, PointLot

from .compose import Closed
from .ledger import deliveries
from .policy import ConsentState
from .quiet_hours import resolve_zone
from .runtime import Runtime

__all__ = ["NO_LONGER_DUE", "recheck_reminders"]

#: What a row's trigger no longer being true is recorded as.
NO_LONGER_DUE = "no_longer_due"


def recheck_reminders(
    session: Session,
    rt: Runtime,
    rows: Sequence[Delivery],
    members: Mapping[int, Member],
    consents: Mapping[int, Mapping[str, ConsentState]],
    now: datetime,
) -> list[Closed]:
    """End the reminders whose points expired or were redeemed; refresh the others' amounts.

    One query for the batch reads the unredeemed, unexpired lots of its
    members; each lot counts on its local date in the member's zone, as
    :mod:`segments.expiry` counted it when planning.
    """
    default_zone = rt.program.default_time_zone
    closed: list[Closed] = []
    live: list[tuple[Delivery, date]] = []
    for row in rows:
        member = members.get(row.member_id)
        if not row.payload or member is None or member.deleted_at is not None:
            continue  # compose records a deleted member
        expires_at = datetime.fromisoformat(row.payload["expires_at"])
        if expires_at <= now:
            detail = f"expired: the points expired at {expires_at.astimezone(UTC):%Y-%m-%d %H:%M}Z"
            closed.append(Closed(row.id, DeliveryStatus.SUPPRESSED, NO_LONGER_DUE, detail))
        else:
            live.append((row, date.fromisoformat(row.payload["expiry_date"])))
    if not live:
        return closed
    zones = {
        row.member_id: resolve_zone(members[row.member_id].time_zone, default_zone)
        for row, _ in live
    }
    until = datetime.combine(max(day for _, day in live) + timedelta(days=2), time(), UTC)
    remaining: dict[tuple[int, date], tuple[int, datetime]] = {}
    lots = select(PointLot.member_id, PointLot.expires_at, PointLot.points - PointLot.redeemed)
    for member_id, lot_expires_at, points in session.execute(
        lots.where(
            PointLot.member_id.in_(zones),
            PointLot.points > PointLot.redeemed,
            PointLot.expires_at > now,
            PointLot.expires_at < until,
        )
    ):
        if lot_expires_at is None:  # excluded by the WHERE; tells the type checker
            continue
        day = lot_expires_at.astimezone(zones[member_id]).date()
        total, earliest = remaining.get((member_id, day), (0, lot_expires_at))
        remaining[(member_id, day)] = (total + int(points), min(earliest, lot_expires_at))
    refreshed: list[dict[str, Any]] = []
    for row, day in live:
        min_points = rt.version(row.campaign_version_id).spec.reminder_min_points
        points, earliest = remaining.get((row.member_id, day), (0, now))
        if points < min_points:
            detail = (
                f"redeemed: {points} points left expiring on {day.isoformat()}, "
                f"below min_points {min_points}"
            )
            closed.append(Closed(row.id, DeliveryStatus.SUPPRESSED, NO_LONGER_DUE, detail))
            continue
        local_today = now.astimezone(zones[row.member_id]).date()
        payload = {
            **(row.payload or {}),
            "points": points,
            "expires_at": earliest.astimezone(UTC).isoformat(),
            "days_left": (day - local_today).days,
        }
        if payload != row.payload:
            row.payload = payload  # the deliver job renders from this (detached) row
            refreshed.append({"b_id": row.id, "b_payload": payload})
    if refreshed:
        session.execute(
            update(deliveries)
            .where(deliveries.c.id == bindparam("b_id"))
            .values(payload=bindparam("b_payload")),
            refreshed,
        )
    return closed
