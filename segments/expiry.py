"""Expiry deadlines: the points each member has expiring, per local expiry date.

The expiry date of a lot
------------------------
Points expire at an instant, ``PointLot.expires_at`` (stored in UTC). The
*expiry date* a member is told about ("120 points expire on 3 Dec") is the
calendar date of that instant in the member's own time zone
(``Member.time_zone``), or in ``default_time_zone`` when the member has none
or an unknown one. A lot expiring at 2026-12-03T03:00Z is on 2 Dec for a
member in New York (22:00 the evening before) and on 3 Dec for one in Berlin:
telling the New Yorker "3 Dec" would let them lose the points the night
before the date we gave. Lots of one member whose instants fall on the same
local date are one deadline; its ``expires_at`` is the earliest of them (the
moment the first of those points go), which is what a reminder deferred by a
frequency cap must beat (DESIGN.md §5).

How it is computed
------------------
SQLite knows no time zones, and PostgreSQL's ``AT TIME ZONE`` fails the whole
query on one member's unknown zone name, so local dates are computed in
Python (``zoneinfo``), identically on both engines, in two stages:

1. SQL, :func:`expiry_candidates`: the lots with points left
   (``points > redeemed``) of members not deleted, each with its member's
   zone and its remaining points, for instants in the UTC range
   ``[start - 1 day, end + 2 days)``, ordered by member, then instant. Every
   UTC offset lies strictly within ±24 h, so that range holds every instant
   whose local date can be in ``[start, end]``, in any zone. It is a range on
   ``expires_at``: the ``(expires_at, member_id)`` index serves it. Lots are
   not summed in SQL: Python sums per local date anyway, and a GROUP BY per
   instant cost a sort and an aggregate over nearly as many groups as lots.
2. Python, :func:`iter_expiring`: streams those rows as plain tuples
   (``yield_per`` on the session's Core connection, a server-side cursor on
   PostgreSQL; no ORM row processing), turns each instant into the member's
   local date, keeps the dates in the window, sums per date, drops sums below
   ``min_points`` and yields in member order, then date order. Within one
   member the rows come in instant order, so a date's rows are consecutive
   (local dates do not go back as instants advance, except across a rare
   backward date-line move, which is merged and re-sorted) and the first is
   the earliest. Zones are looked up once per zone name; a zone whose UTC offset
   is the same over the whole scan (most zones, most months) turns an instant
   into a date by adding that offset instead of converting. It holds one
   member's rows at a time, never the whole scan.

:func:`due_reminders` turns those deadlines into reminders for lead times
("30, 7 and 1 days before"). Nothing here opens a session: callers pass theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import DateTime, Select, String, and_, func, literal, or_, select, type_coerce
from sqlalchemy.orm import Session

from store.models import Member, PointLot

from ._sql import PerDialect

__all__ = [
    "DEFAULT_BATCH",
    "DueReminder",
    "ExpiringPoints",
    "due_reminders",
    "expiry_candidates",
    "iter_expiring",
]

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    #: The rows of :func:`expiry_candidates`: (member_id, time_zone, expires_at, points).
    _Candidates: TypeAlias = Select[int, str | None, datetime, int]

#: Rows fetched per round trip while streaming (``yield_per``).
DEFAULT_BATCH = 5000
_first = itemgetter(0)
#: The row after the last: no member's id is None.
_END: tuple[Any, ...] = (None, None, None, 0)
#: How far the UTC scan reaches beyond the local window: any UTC offset is within ±24 h.
_BEFORE = timedelta(days=1)
_AFTER = timedelta(days=2)


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpiringPoints:
    """The points one member has expiring on one local date."""

    member_id: int
    expiry_date: date
    """The calendar date of the deadline in the member's time zone."""
    points: int
    """Remaining (unredeemed) points of the lots expiring on that date, summed."""
    expires_at: datetime
    """The earliest instant (UTC) on that date at which some of these points expire."""


_new = object.__new__
_set_member = ExpiringPoints.__dict__["member_id"].__set__
_set_date = ExpiringPoints.__dict__["expiry_date"].__set__
_set_points = ExpiringPoints.__dict__["points"].__set__
_set_expires = ExpiringPoints.__dict__["expires_at"].__set__


@dataclass(frozen=True, kw_only=True, slots=True)
class DueReminder:
    """A reminder due today: its once-only key is (member, expiry date, lead days)."""

    member_id: int
    expiry_date: date
    lead_days: int
    """Which reminder this is: "``lead_days`` days before the expiry date"."""
    points: int
    expires_at: datetime
    """The deadline: the reminder is pointless after it."""


def expiry_candidates(start: date, end: date) -> Select[int, str | None, datetime, int]:
    """The lots with points left whose instants may be on a local date in a window.

    Rows are ``(member_id, time_zone, expires_at, points)``, one per lot with
    points left (``points`` is ``points - redeemed``); deleted members are left
    out. ``expires_at`` ranges over ``[start - 1 day, end + 2 days)`` in UTC,
    wider than any zone's local dates ``start..end``: :func:`iter_expiring`
    narrows it to local dates and sums per date. Ordered by member, then
    instant. ``expires_at`` comes back as a naive UTC datetime on both
    engines, without the ORM type's per-row conversion.

    Args:
        start: the first local expiry date wanted.
        end: the last local expiry date wanted (inclusive).

    Raises:
        ValueError: ``end`` is before ``start``.
    """
    return _candidates([_checked_window(start, end)])


def iter_expiring(
    session: Session,
    start: date,
    end: date,
    *,
    min_points: int = 1,
    default_time_zone: str = "UTC",
    batch: int = DEFAULT_BATCH,
) -> Iterator[ExpiringPoints]:
    """Stream, per member and local expiry date in ``[start, end]``, the points expiring.

    The session's transaction must stay open while iterating: on PostgreSQL
    the rows come from a server-side cursor, which a commit closes. Closing
    the iterator early closes the cursor. On SQLite every transaction holds
    the write lock (``BEGIN IMMEDIATE``, see :mod:`store.engine`), so other
    writers wait while it streams: write the results through the same session.

    Args:
        session: where to run the query.
        start: the first local expiry date (inclusive).
        end: the last local expiry date (inclusive).
        min_points: leave out (member, date) pairs with fewer points in total.
        default_time_zone: the IANA zone of members with no (or an unknown) zone.
        batch: rows fetched per round trip.

    Returns:
        :class:`ExpiringPoints` in member order, then expiry date order.

    Raises:
        ValueError: ``end`` is before ``start``, or ``default_time_zone`` is unknown.
    """
    windows = [_checked_window(start, end)]
    default = _default_zone(default_time_zone)
    _check_batch(batch)
    return _stream(session, windows, lambda day: start <= day <= end, min_points, default, batch)


def due_reminders(
    session: Session,
    today: date,
    lead_days: Sequence[int],
    *,
    min_points: int = 1,
    default_time_zone: str = "UTC",
    catch_up: bool = False,
    batch: int = DEFAULT_BATCH,
) -> Iterator[DueReminder]:
    """Stream the expiry reminders due on ``today``, in member order.

    Let ``days_left = expiry_date - today`` (the member's local expiry date).

    - Normally (``catch_up=False``) the reminder with lead ``L`` is due exactly
      when ``days_left == L``: leads ``[30, 7, 1]`` remind 30, 7 and 1 days
      before, and nothing on the other days.
    - With ``catch_up=True`` (after downtime), for every expiry date with
      ``1 <= days_left <= max(lead_days)`` the one reminder due is the most
      urgent whose day has come: the smallest ``L`` with ``L >= days_left``.
      Leads ``[30, 7, 1]`` and 5 days left give the 7-day reminder (the 30-day
      one is stale, the 1-day one is not yet due); 20 days left give the
      30-day one. On a day with ``days_left`` in ``lead_days`` it is the same
      reminder as without catch-up, so catch-up may run every day: the
      once-only key (member, expiry date, lead days) makes a repeat harmless.
      A deadline first seen late (points earned 20 days before they expire)
      gets the 30-day reminder then, not only the 7-day one.

    Never a reminder on or after the expiry date: leads are at least 1.
    ``today`` is the caller's calendar day (the scheduler's), while expiry
    dates are member-local, so near the date line a 1-day reminder can be due
    after its points went: the deliver step must drop a reminder whose
    ``expires_at`` has passed ("the trigger still true", DESIGN.md §4).

    Args:
        session: where to run the query; keep its transaction open while iterating.
        today: the day the reminders go out.
        lead_days: days before the expiry date, e.g. ``[30, 7, 1]``.
        min_points: no reminder for fewer points expiring on the date.
        default_time_zone: the IANA zone of members with no (or an unknown) zone.
        catch_up: send the most urgent reminder not sent on its day, as above.
        batch: rows fetched per round trip.

    Raises:
        ValueError: ``lead_days`` is empty or holds a number below 1, or
            ``default_time_zone`` is unknown.
    """
    leads = sorted(set(lead_days))
    if not leads or any(isinstance(lead, bool) or lead < 1 for lead in leads):
        raise ValueError(f"lead_days must be whole numbers of days >= 1, not {lead_days!r}")
    default = _default_zone(default_time_zone)
    _check_batch(batch)
    days_left = range(1, leads[-1] + 1) if catch_up else leads
    lead_on = {
        today + timedelta(days=left): min(lead for lead in leads if lead >= left)
        for left in days_left
    }
    return _reminders(session, [(day, day) for day in lead_on], lead_on, min_points, default, batch)


def _reminders(
    session: Session,
    windows: list[tuple[date, date]],
    lead_on: Mapping[date, int],
    min_points: int,
    default: tzinfo,
    batch: int,
) -> Iterator[DueReminder]:
    for due in _stream(session, windows, lead_on.__contains__, min_points, default, batch):
        yield DueReminder(
            member_id=due.member_id,
            expiry_date=due.expiry_date,
            lead_days=lead_on[due.expiry_date],
            points=due.points,
            expires_at=due.expires_at,
        )


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")


def _checked_window(start: date, end: date) -> tuple[date, date]:
    if end < start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    return start, end


def _candidates(windows: Iterable[tuple[date, date]]) -> _Candidates:
    """The stage-1 query over the UTC ranges covering local-date ``windows``."""
    ranges = _merged(
        (_midnight_utc(first) - _BEFORE, _midnight_utc(last) + _AFTER) for first, last in windows
    )
    # MATERIALIZED: on PostgreSQL a server-side cursor is planned for its first
    # 10% of rows (cursor_tuple_fraction), which picks a walk of the member_id
    # index over every lot, filtering on expires_at (12 s instead of 0.7 s on 5M
    # lots). Materializing the range scan first keeps the expires_at index in use.
    lots = (
        select(
            PointLot.member_id,
            PointLot.expires_at,
            (PointLot.points - PointLot.redeemed).label("remaining"),
        )
        .where(
            or_(*(and_(PointLot.expires_at >= lo, PointLot.expires_at < hi) for lo, hi in ranges)),
            PointLot.points > PointLot.redeemed,
        )
        .cte("expiring_lots")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    # Naive UTC on both engines, with no TypeDecorator call per row: psycopg
    # builds naive datetimes faster than zone-aware ones, and _stream turns them
    # into local dates with a per-zone offset (see _LocalDates).
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


def _midnight_utc(day: date) -> datetime:
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


def _stream(
    session: Session,
    windows: list[tuple[date, date]],
    wanted: Callable[[date], bool],
    min_points: int,
    default: tzinfo,
    batch: int,
) -> Iterator[ExpiringPoints]:
    """Stage 2: local dates, the window, sums per date and ``min_points``, one member at a time."""
    span = min(first for first, _ in windows), max(last for _, last in windows)
    local_dates = _LocalDates(
        default, _midnight_utc(span[0]) - _BEFORE, _midnight_utc(span[1]) + _AFTER
    )
    result = session.connection().execute(
        _candidates(windows), execution_options={"yield_per": batch}
    )
    # The rows, then one end marker that flushes the last member (no member id is None).
    rows: Iterator[Any] = chain.from_iterable(chain(result.partitions(), [[_END]]))
    member: Any = _END  # the member whose rows are being read (none yet)
    offset: timedelta | None = None
    zone = default
    # One member's dates in order: [day, points, earliest instant]; days_sorted
    # turns False only if a local date went back (see the module docstring).
    days: list[list[Any]] = []
    days_sorted = True
    try:
        for member_id, zone_name, expires_at, points in rows:
            if member_id != member:
                # Inline rather than a generator per member: this runs ~300,000 times a scan.
                for day, total, earliest in days if days_sorted else sorted(days, key=_first):
                    if total >= min_points:
                        yield _expiring(member, day, int(total), earliest.replace(tzinfo=UTC))
                if member_id is None:
                    break
                days, days_sorted = [], True
                member = member_id
                zone, offset = local_dates.of(zone_name)
            if offset is not None:
                day = (expires_at + offset).date()
            else:
                day = expires_at.replace(tzinfo=UTC).astimezone(zone).date()
            if days and days[-1][0] == day:
                days[-1][1] += points
            elif not wanted(day):
                continue
            elif not days or days[-1][0] < day:
                days.append([day, points, expires_at])
            else:
                _merge_back(days, day, points, expires_at)
                days_sorted = False
    finally:
        result.close()


def _expiring(member_id: int, day: date, points: int, expires_at: datetime) -> ExpiringPoints:
    """``ExpiringPoints(...)`` made by setting its slots: the frozen ``__init__``'s
    ``object.__setattr__`` per field cost 0.7 s of a 1M-member scan (no ``__post_init__``)."""
    item = _new(ExpiringPoints)
    _set_member(item, member_id)
    _set_date(item, day)
    _set_points(item, points)
    _set_expires(item, expires_at)
    return item


class _LocalDates:
    """Per zone name: the zone, and its UTC offset if one offset holds over the whole scan.

    With one offset, a naive UTC instant's local date is ``(instant + offset).date()``,
    a fifth of the cost of a zone conversion per row. The offset is sampled every
    hour of the scanned UTC span; no zone changes its offset and back within an
    hour, so a zone with a transition in the span is found and converted per row.
    """

    def __init__(self, default: tzinfo, first: datetime, last: datetime) -> None:
        self._default = default
        hours = int((last - first) / timedelta(hours=1)) + 1
        self._samples = [first + timedelta(hours=n) for n in range(hours)]
        self._known: dict[str | None, tuple[tzinfo, timedelta | None]] = {}

    def of(self, name: str | None) -> tuple[tzinfo, timedelta | None]:
        known = self._known.get(name)
        if known is None:
            zone = _zone(name, self._default)
            offsets = {at.astimezone(zone).utcoffset() for at in self._samples}
            offset = offsets.pop() if len(offsets) == 1 else None
            known = self._known[name] = (zone, offset)
        return known


def _merge_back(days: list[list[Any]], day: date, points: int, expires_at: datetime) -> None:
    """Add a row whose local date is before the last one seen (a backward zone shift)."""
    for entry in days:
        if entry[0] == day:
            entry[1] += points  # the first row of a date came first: it is the earliest
            return
    days.append([day, points, expires_at])


def _default_zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"default_time_zone {name!r} is not an IANA time zone") from exc


def _zone(name: str | None, default: tzinfo) -> tzinfo:
    """The member's zone, else ``default`` (no zone, or one this machine does not know)."""
    return (_known_zone(name) if name else None) or default


@lru_cache(maxsize=1024)
def _known_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("unknown member time zone %r; using the default zone", name)
        return None
