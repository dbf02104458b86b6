"""The one clock every part of loyalcast reads: :func:`utcnow`.

Scheduling, planning, policy (quiet hours, caps, expiry) and the ledger all
ask :func:`utcnow` for the time rather than the system clock directly, so a
test can run a whole month of a program in minutes by installing a clock it
controls with :func:`set_clock` (the simulated-month test does). Production
never calls :func:`set_clock`; the clock is then ``datetime.now(UTC)``.

The clock is per process: worker processes started by a test keep the
system clock. Rate limits (Redis token buckets) and leases on Redis keys
measure real elapsed time and do not use it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "set_clock", "utcnow"]

#: A source of the current instant: aware, in UTC.
Clock = Callable[[], datetime]


def _system() -> datetime:
    return datetime.now(UTC)


_clock: Clock = _system


def utcnow() -> datetime:
    """The current instant, aware, in UTC (the installed clock's)."""
    return _clock()


def set_clock(clock: Clock | None) -> Clock:
    """Make ``clock`` the source of :func:`utcnow`; ``None`` restores the system clock.

    Returns the clock that was installed before, so a caller can put it back.
    """
    global _clock
    previous = _clock
    _clock = clock if clock is not None else _system
    return previous
