"""Quiet hours in the member's own time zone, and the instant they end.

A :class:`~workers.program.QuietHours` window is a pair of wall times. On each
local date ``D`` it is one interval of instants: from ``start`` on ``D`` to
``end`` on ``D`` (or on ``D + 1`` when the window wraps midnight). Wall times
become instants with :func:`resolve_wall`:

- a wall time that does not exist (the spring-forward gap) becomes the first
  instant after the gap: an end of 02:30 on 8 March 2026 in New York opens at
  03:00 EDT;
- a wall time that happens twice (fall-back) is its first occurrence.

Because the window is an interval of instants per local date, a night's quiet
hours start once and end once: the repeated hour of a fall-back does not make
a window that has already ended quiet again, and a gap neither skips a day's
window nor shifts its opening past the gap. A message found inside is deferred
to the opening, never dropped (DESIGN.md §4, §7).
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta

from .program import DEFAULT_TIME_ZONE, QuietHours

__all__ = [
    "describe",
    "is_quiet",
    "local_midnight",
    "next_opening",
    "quiet_interval",
    "resolve_wall",
    "resolve_zone",
]


@functools.lru_cache(maxsize=1024)
def resolve_zone(name: str | None, default: str = DEFAULT_TIME_ZONE) -> zoneinfo.ZoneInfo:
    """The member's zone, or ``default`` when the member has none or an unknown one.

    Cached, holding each zone: ``ZoneInfo`` itself keeps only the last 8 keys
    strongly, so with more zones than that in turn (a broadcast's members) a
    zone no one holds is read from disk again, about 0.2 ms a call; the
    deliver job calls this for every row (quiet hours, caps).
    """
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return zoneinfo.ZoneInfo(default)


def _wall(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def resolve_wall(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant a naive wall time names in ``zone``.

    A wall time inside a gap gives the first instant after the gap (the
    transition itself); one that happens twice gives the first occurrence.
    """
    if wall.tzinfo is not None:
        raise ValueError("a wall time is naive")
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first
    # In a gap: fold 0 and 1 read the wall time with the offsets before and after
    # the transition, one instant on each side of it. Search for the transition:
    # the first whole second whose wall time is not before ``wall``.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(first, other), max(first, other)
    low, high = 0, int((hi - lo).total_seconds())
    while high - low > 1:
        mid = (low + high) // 2
        if _wall(lo + timedelta(seconds=mid), zone) >= wall:
            high = mid
        else:
            low = mid
    return lo + timedelta(seconds=high)


# Pure functions of a day and a zone, asked the same question for every member of a
# zone in a batch (caps' calendar periods, quiet hours): cached, 26-74 µs -> under 1 µs.
@functools.lru_cache(maxsize=4096)
def local_midnight(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant ``day`` begins in ``zone`` (DST-safe, see :func:`resolve_wall`)."""
    return resolve_wall(datetime.combine(day, time(0)), zone)


@functools.lru_cache(maxsize=4096)
def quiet_interval(
    day: date, window: QuietHours, zone: zoneinfo.ZoneInfo
) -> tuple[datetime, datetime]:
    """The quiet interval ``[start, end)`` in UTC that begins on local date ``day``."""
    end_day = day if window.start < window.end else day + timedelta(days=1)
    start = resolve_wall(datetime.combine(day, window.start), zone)
    end = resolve_wall(datetime.combine(end_day, window.end), zone)
    return start, end


def next_opening(
    now: datetime,
    time_zone: str | None,
    window: QuietHours,
    *,
    default_time_zone: str = DEFAULT_TIME_ZONE,
) -> datetime | None:
    """The first instant at or after ``now`` outside quiet hours, in UTC; None when ``now`` is.

    Args:
        now: an aware instant.
        time_zone: the member's IANA zone; None or unknown means ``default_time_zone``.
        window: the channel's quiet hours.
        default_time_zone: the program's zone for members without one.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware instant")
    zone = resolve_zone(time_zone, default_time_zone)
    opening = None
    at = now.astimezone(UTC)
    # An end can fall where the next window starts, when the open time between
    # them lies wholly in a gap (23:59-23:58 on a night that skips midnight):
    # then the opening is the end of that next window.
    for _ in range(3):
        end = _end_of_window_containing(at, window, zone)
        if end is None:
            break
        opening = at = end
    return opening


def _end_of_window_containing(
    at: datetime, window: QuietHours, zone: zoneinfo.ZoneInfo
) -> datetime | None:
    today = at.astimezone(zone).date()
    # The interval starting the day before can reach into today (a wrapping
    # window); the one starting tomorrow only in zones whose clocks go back at midnight.
    for offset in (-1, 0, 1):
        start, end = quiet_interval(today + timedelta(days=offset), window, zone)
        if start <= at < end:
            return end
    return None


def is_quiet(
    now: datetime,
    time_zone: str | None,
    window: QuietHours | None,
    *,
    default_time_zone: str = DEFAULT_TIME_ZONE,
) -> bool:
    """Whether ``now`` falls inside ``window`` (never, when there is no window)."""
    if window is None:
        return False
    return next_opening(now, time_zone, window, default_time_zone=default_time_zone) is not None


def describe(
    until: datetime,
    time_zone: str | None,
    *,
    channel: str,
    default_time_zone: str = DEFAULT_TIME_ZONE,
) -> str:
    """A deferred delivery's detail: ``quiet_hours: sms until 2026-12-01T08:00-05:00``.

    The instant is shown in the member's zone, at minute resolution.
    """
    local = until.astimezone(resolve_zone(time_zone, default_time_zone))
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"quiet_hours: {channel} until {local:%Y-%m-%dT%H:%M}{zone}"
