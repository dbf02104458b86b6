"""When campaigns send: durations, broadcast schedules (an instant, a member-local
wall time, a cron recurrence) and their spread.

A schedule is read as wall time in a zone, and a wall time becomes an instant
with :func:`~workers.quiet_hours.resolve_wall`, which is DST-safe (a wall time
in the spring-forward gap is the first instant after it; one that happens
twice is its first occurrence). A cron recurrence is evaluated on the wall
clock, not on instants: ``0 10 * * MON`` is every Monday at 10:00 on the
clock of ``timezone`` (or of each member, with ``timezone: member``), so a
DST change neither skips nor doubles an occurrence (DESIGN.md §7).

With ``timezone: member`` an occurrence's run falls due where the wall time
comes first (UTC+14, :data:`EARLIEST_ZONE`); planning holds each member's row
until the wall time in the member's own zone.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .quiet_hours import resolve_wall

__all__ = [
    "EARLIEST_ZONE",
    "Schedule",
    "format_duration",
    "parse_duration",
]

#: The earliest time zone on Earth (UTC+14): a member-local schedule's run falls
#: due when the wall time first arrives anywhere.
EARLIEST_ZONE = "Pacific/Kiritimati"

_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_ISO_DURATION = TypeAdapter(timedelta)


def parse_duration(value: Any) -> timedelta:
    """``"0m"``, ``"90m"``, ``"2h"``, ``"2d"``, ``"1w"`` or ``"1d12h"`` as a timedelta.

    ISO 8601 (``"PT2H"``) is read too: it is how a stored campaign spec keeps durations.

    Raises:
        ValueError: anything else (a bare number is refused: the unit is not obvious).
    """
    if isinstance(value, timedelta):
        return value
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text and text.startswith("p"):  # ISO 8601, as a stored spec has it (model_dump: "PT2H")
        try:
            return _ISO_DURATION.validate_python(text.upper())
        except ValidationError:
            pass
    if not text or _DURATION.sub("", text).strip():
        raise ValueError(
            f"not a duration: {value!r}; write a number and a unit (w, d, h, m, s), e.g. 2d or 90m"
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text)))


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`, e.g. ``timedelta(days=1, hours=12)`` -> ``1d12h``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0m"
    parts = []
    for unit, size in _UNITS.items():
        if unit == "w":
            continue
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _zone(value: str) -> str:
    if value == "member":
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


class Schedule(BaseModel):
    """When a broadcast goes out.

    Exactly one of ``at`` (one occurrence: an instant read in ``timezone``, or
    a wall time without offset) and ``cron`` (a recurrence, five fields, on
    the wall clock of ``timezone``; ``until`` ends it). ``timezone: member``
    means each member's own zone. ``spread`` staggers the messages of an
    occurrence evenly over that long, each member at a fixed offset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime | None = None
    cron: str | None = None
    timezone: str = "UTC"
    until: datetime | None = None
    spread: timedelta | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _zone(value)

    @field_validator("spread", mode="before")
    @classmethod
    def _spread(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        spread = parse_duration(value)
        if not timedelta(0) < spread <= timedelta(days=1):
            raise ValueError("spread must be more than 0 and at most 1d")
        return spread

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as exc:
            raise ValueError(
                f"not a cron expression (five fields, e.g. '0 10 * * MON'): {exc}"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.at is None) == (self.cron is None):
            raise ValueError("give either at (one occurrence) or cron (a recurrence)")
        if self.until is not None and self.cron is None:
            raise ValueError("until ends a cron recurrence; it needs cron")
        if self.member_local and self.at is not None and self.at.tzinfo is not None:
            raise ValueError(
                "timezone: member takes a wall time without offset, e.g. 2026-12-01T10:00"
            )
        return self

    @property
    def member_local(self) -> bool:
        """True for ``timezone: member``: each member at the wall time in their own zone."""
        return self.timezone == "member"

    @property
    def recurring(self) -> bool:
        """True for a cron recurrence."""
        return self.cron is not None

    def due_at(self) -> datetime:
        """When a one-off (``at``) run falls due, in UTC (member-local: where it comes first)."""
        if self.at is None:
            raise ValueError("a cron schedule has one due instant per occurrence")
        if self.at.tzinfo is not None:
            return self.at.astimezone(UTC)
        return self.wall_instant(self.at, EARLIEST_ZONE if self.member_local else self.timezone)

    def wall_instant(self, wall: datetime, time_zone: str) -> datetime:
        """The instant a wall time names in ``time_zone`` (DST-safe), in UTC."""
        return resolve_wall(wall.replace(tzinfo=None), zoneinfo.ZoneInfo(time_zone))

    def member_instant(self, time_zone: str, wall: datetime | None = None) -> datetime:
        """The instant a member-local occurrence (``wall``, default ``at``) names in a zone."""
        moment = wall if wall is not None else self.at
        if moment is None:
            raise ValueError("a cron occurrence needs its wall time")
        return self.wall_instant(moment, time_zone)
