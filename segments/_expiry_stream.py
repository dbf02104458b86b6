"""Stage 2 of the expiry scan: local dates, one member at a time (see :mod:`segments.expiry`).

The candidate rows of :mod:`segments._expiry_sql` come as plain tuples from a
server-side cursor (:func:`store.bulk.stream_tuples`); each instant becomes
the member's local date (a fixed offset per zone where one holds over the
scan, else a zone conversion), dates outside the window are dropped, points
are summed per date, and each member's dates are yielded in order before the
next member's rows are read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from store.bulk import stream_tuples

from ._expiry_sql import AFTER, BEFORE, candidates, midnight_utc

__all__ = ["ExpiringPoints", "default_zone", "stream"]

logger = logging.getLogger("segments.expiry")

_first = itemgetter(0)
#: A naive UTC instant made aware: ``_UTC_EPOCH + (naive - _EPOCH)``, a tenth of
#: the cost of ``naive.replace(tzinfo=UTC)`` (a keyword call, 0.2 s of a 1M scan).
_EPOCH = datetime(1970, 1, 1)
_UTC_EPOCH = _EPOCH.replace(tzinfo=UTC)
#: The row after the last: no member's id is None.
_END: tuple[Any, ...] = (None, None, None, 0)


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


def stream(
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
        default, midnight_utc(span[0]) - BEFORE, midnight_utc(span[1]) + AFTER
    )
    pages = stream_tuples(session.connection(), candidates(windows), batch)
    # The rows, then one end marker that flushes the last member (no member id is None).
    rows: Iterator[Any] = chain.from_iterable(chain(pages, [[_END]]))
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
                        yield _expiring(member, day, int(total), _UTC_EPOCH + (earliest - _EPOCH))
                if member_id is None:
                    break
                days, days_sorted = [], True
                member = member_id
                zone, offset = local_dates.of(zone_name)
            if offset is not None:
                day = (expires_at + offset).date()
            else:
                day = (_UTC_EPOCH + (expires_at - _EPOCH)).astimezone(zone).date()
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
        pages.close()


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


def default_zone(name: str) -> tzinfo:
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
