"""Stage 1 of the expiry scan: the SQL that finds the candidate lots (see :mod:`segments.expiry`).

One query over a range of ``expires_at`` (the ``(expires_at, member_id)`` index,
which covers ``points`` and ``redeemed`` on PostgreSQL, so the window is read
from the index alone), joined to the members for their zone, ordered by member
and instant. Nothing is summed here: the local date of an instant depends on
the member's zone, which :mod:`segments._expiry_stream` applies in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, TypeAlias

from sqlalchemy import DateTime, Select, String, func, literal, select, type_coerce, union_all

from store.models import Member, PointLot

from ._sql import PerDialect

__all__ = ["AFTER", "BEFORE", "candidates", "midnight_utc"]

if TYPE_CHECKING:
    #: The rows of :func:`candidates`: (member_id, time_zone, expires_at, points).
    _Candidates: TypeAlias = Select[int, str | None, datetime, int]

#: How far the UTC scan reaches beyond the local window: any UTC offset is within ±24 h.
BEFORE = timedelta(days=1)
AFTER = timedelta(days=2)


def candidates(windows: Iterable[tuple[date, date]]) -> _Candidates:
    """The stage-1 query over the UTC ranges covering local-date ``windows``."""
    ranges = _merged(
        (midnight_utc(first) - BEFORE, midnight_utc(last) + AFTER) for first, last in windows
    )
    # MATERIALIZED: on PostgreSQL a server-side cursor is planned for its first
    # 10% of rows (cursor_tuple_fraction), which picks a walk of the member_id
    # index over every lot, filtering on expires_at (12 s instead of 0.7 s on 5M
    # lots). Materializing the range scan first keeps the expires_at index in use.
    # One range scan per merged range (disjoint, so UNION ALL repeats no lot):
    # an OR of ranges would be a bitmap scan, which visits the heap even where
    # the index covers every column it needs (PostgreSQL, migration 0006).
    remaining = (PointLot.points - PointLot.redeemed).label("remaining")
    scans = [
        select(PointLot.member_id, PointLot.expires_at, remaining).where(
            PointLot.expires_at >= lo, PointLot.expires_at < hi, PointLot.points > PointLot.redeemed
        )
        for lo, hi in ranges
    ]
    lots = (
        (scans[0] if len(scans) == 1 else union_all(*scans))
        .cte("expiring_lots")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    # Naive UTC on both engines, with no TypeDecorator call per row: psycopg
    # builds naive datetimes faster than zone-aware ones, and stream() turns them
    # into local dates with a per-zone offset (see segments._expiry_stream).
    expires_at = PerDialect(
        sqlite=type_coerce(lots.c.expires_at, DateTime()),
        postgresql=func.timezone(literal("UTC", String), lots.c.expires_at),
        type_=DateTime(),
    )
    return (
        select(lots.c.member_id, Member.time_zone, expires_at, lots.c.remaining)
        .join(Member, Member.id == lots.c.member_id)
        .where(Member.deleted_at.is_(None))
        .order_by(lots.c.member_id, lots.c.expires_at)
    )


def midnight_utc(day: date) -> datetime:
    """The first instant (UTC) of ``day`` in UTC."""
    return datetime.combine(day, time(), UTC)


def _merged(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching ranges joined, so the database scans each instant once."""
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged
