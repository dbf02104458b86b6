"""When a planned broadcast row may go: the member's own wall time, and its spread offset.

Planning writes every row of a run at once; a row that must not go yet is
written ``deferred`` (reason ``scheduled``) with ``not_before``, and the
sweeper enqueues it when that moment comes (the broker never holds it). Two
things set the moment, in one mechanism for ``at`` and ``cron`` runs alike:

- ``timezone: member``: the run's wall time (``at``, or the cron
  occurrence) in the member's own zone (the program's default without one),
  resolved DST-safe.
- ``spread: 2h``: ``start + offset``, where ``start`` is the occurrence's
  instant (the member's own with ``timezone: member``) and ``offset`` is fixed
  per (run, member) and uniform over ``[0, spread)``: a hash of both, so a
  re-planned page gives every member the same moment, and members are spread
  evenly without any shared counter. A run planned late (after downtime)
  spreads from when it is planned, rather than sending its backlog at once.

A moment already past sends at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from store import DeliveryStatus

from .schedules import Schedule, format_duration

__all__ = ["RunTiming", "row_timing", "spread_offset"]


@dataclass(frozen=True)
class RunTiming:
    """What planning knows of a run's moment."""

    run_id: int
    due_at: datetime
    """When the run fell due (the occurrence's instant in the schedule's zone)."""
    wall: datetime | None
    """The occurrence's wall time (``at`` or the cron occurrence), for member-local rows."""


def spread_offset(run_id: int, member_id: int, spread: timedelta) -> timedelta:
    """A member's fixed offset within a run's spread: uniform over ``[0, spread)``."""
    digest = hashlib.sha256(f"{run_id}:{member_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big")
    micros = fraction * (spread // timedelta(microseconds=1)) >> 64
    return timedelta(microseconds=micros)


def row_timing(
    schedule: Schedule | None,
    run: RunTiming,
    member_id: int,
    time_zone: str | None,
    default_zone: str,
    now: datetime,
) -> dict[str, Any]:
    """Row fields for when a member's delivery may go: ``{}`` for now, else a deferral."""
    if schedule is None or not (schedule.member_local or schedule.spread):
        return {}
    start, detail = run.due_at, ""
    if schedule.member_local and run.wall is not None:
        zone = time_zone or default_zone
        try:
            start = schedule.member_instant(zone, run.wall)
        except (ValueError, KeyError):  # an unknown zone: the program's
            zone = default_zone
            start = schedule.member_instant(zone, run.wall)
        detail = f"{run.wall:%Y-%m-%d %H:%M} member-local ({zone})"
    at = start
    if schedule.spread:
        offset = spread_offset(run.run_id, member_id, schedule.spread)
        at = max(start, now) + offset
        spread = f"spread over {format_duration(schedule.spread)}: +{_short(offset)}"
        detail = f"{detail}, {spread}" if detail else spread
    if at <= now:
        return {}
    return {
        "status": DeliveryStatus.DEFERRED,
        "not_before": at,
        "reason": "scheduled",
        "detail": detail,
        "enqueued_at": None,
    }


def _short(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
