"""Campaign files: what a marketer writes, validated before anything is stored.

A campaign file is YAML (see DESIGN.md, "Campaign files")::

    name: winter-double-points
    kind: broadcast
    category: marketing
    segment: {all: [{field: tier, op: in, value: [gold, platinum]}]}
    channels: [push, email, sms]     # preference order; or `all`
    template: winter-double-points
    schedule: {at: "2026-12-01T10:00", timezone: Europe/Berlin}

:func:`parse_campaign` turns the text into a frozen :class:`CampaignSpec` or
raises :class:`CampaignFileError`, whose message names the file, the line
and the key of every problem (``campaign.yaml, line 7, segment.all[0].op:
unknown operator "=>"``).

This version runs ``kind: broadcast``, at an instant or at a member-local
wall time (``timezone: member``); expiry reminders and welcome sequences are
refused with a message saying so rather than accepted and never run.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from channels import CHANNEL_NAMES
from segments import RuleError, parse_rule

from .program import Program, QuietHours
from .quiet_hours import resolve_wall
from .yamlfile import Problem
from .yamlfile import dotted as _dotted
from .yamlfile import line_map as _line_map
from .yamlfile import loc_from_path as _loc_from_path
from .yamlfile import nearest_line as _nearest_line

__all__ = [
    "CampaignFileError",
    "CampaignSpec",
    "Problem",
    "Schedule",
    "parse_campaign",
]

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
#: Channels a campaign can send on.
SENDABLE_CHANNELS = CHANNEL_NAMES


class CampaignFileError(ValueError):
    """A campaign file (or its templates) cannot be used; every problem is listed."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}, {p}" for p in problems]
        super().__init__("\n".join(lines))


#: The earliest time zone on Earth (UTC+14): a member-local schedule's run falls
#: due when the wall time first arrives anywhere.
EARLIEST_ZONE = "Pacific/Kiritimati"


class Schedule(BaseModel):
    """When a broadcast goes out: an instant read in ``timezone``, or, with
    ``timezone: member``, a wall time each member gets in their own zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value == "member":
            return value
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _member_wall_time(self) -> Schedule:
        if self.member_local and self.at.tzinfo is not None:
            raise ValueError(
                "timezone: member takes a wall time without offset, e.g. 2026-12-01T10:00"
            )
        return self

    @property
    def member_local(self) -> bool:
        """True for ``timezone: member``: each member at ``at`` in their own zone."""
        return self.timezone == "member"

    def due_at(self) -> datetime:
        """When the run falls due, in UTC (for member-local: where the wall time comes first)."""
        at = self.at
        if self.member_local:
            return resolve_wall(at.replace(tzinfo=None), zoneinfo.ZoneInfo(EARLIEST_ZONE))
        if at.tzinfo is None:
            at = at.replace(tzinfo=zoneinfo.ZoneInfo(self.timezone))
        return at.astimezone(UTC)

    def member_instant(self, time_zone: str) -> datetime:
        """The instant a member-local schedule names in ``time_zone`` (DST-safe)."""
        return resolve_wall(self.at.replace(tzinfo=None), zoneinfo.ZoneInfo(time_zone))


class CampaignSpec(BaseModel):
    """A validated campaign file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["broadcast"]
    category: Literal["marketing", "service", "transactional"]
    description: str | None = None
    segment: dict[str, Any] | str | None = None
    """A rule, or the name of a saved segment (resolved when the campaign is created)."""
    channels: list[str] | Literal["all"]
    template: str
    schedule: Schedule | None = None
    on_ambiguous: Literal["skip", "resend"] = "skip"
    max_attempts: int = Field(default=5, ge=1, le=20)
    max_sms_segments: int = Field(default=6, ge=1, le=10)
    """An SMS longer than this many segments is not sent (each segment is billed)."""
    quiet_hours: dict[str, dict[str, str] | None] = Field(default_factory=dict)
    """Per channel, ``{start: "21:00", end: "08:00"}`` or null: replaces the program's window."""

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(
        cls, value: dict[str, dict[str, str] | None]
    ) -> dict[str, dict[str, str] | None]:
        for channel, window in value.items():
            if channel not in CHANNEL_NAMES:
                raise ValueError(f"unknown channel {channel!r}")
            if window is not None:
                quiet_window(window)
        return value

    def quiet_hours_for(self, channel: str, program: Program) -> QuietHours | None:
        """The quiet window on ``channel``: this campaign's if it sets one, else the program's."""
        if channel in self.quiet_hours:
            window = self.quiet_hours[channel]
            return None if window is None else quiet_window(window)
        return program.quiet_hours_for(channel)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        if value in ("expiry_reminder", "welcome_sequence", "triggered"):
            raise ValueError(f"kind {value!r} is not supported in this version; use broadcast")
        return value

    @field_validator("name", "template")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError(
                "must be lower-case letters, digits, '-' or '_' (at most 100 characters)"
            )
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str] | str) -> list[str] | str:
        if value == "all":
            return value
        if not value:
            raise ValueError("name at least one channel")
        for name in value:
            if name not in CHANNEL_NAMES:
                raise ValueError(
                    f"unknown channel {name!r}; choose from {', '.join(CHANNEL_NAMES)}"
                )
        if len(set(value)) != len(value):
            raise ValueError("a channel is named twice")
        return value

    @property
    def channel_list(self) -> list[str]:
        """The channels in preference order (``all`` expanded)."""
        return list(SENDABLE_CHANNELS) if self.channels == "all" else list(self.channels)

    @property
    def sends_on_every_channel(self) -> bool:
        """True for ``channels: all``: one message per channel, the channel in the dedupe key."""
        return self.channels == "all"


def quiet_window(window: dict[str, str]) -> QuietHours:
    """``{start: "21:00", end: "08:00"}`` as a :class:`QuietHours`.

    Raises:
        ValueError: keys other than start and end, or a time that is not HH:MM.
    """
    if set(window) != {"start", "end"}:
        raise ValueError(
            "quiet hours need exactly start and end, e.g. {start: '21:00', end: '08:00'}"
        )
    try:
        return QuietHours(
            start=time.fromisoformat(str(window["start"])),
            end=time.fromisoformat(str(window["end"])),
        )
    except ValueError as exc:
        raise ValueError(f"quiet hours: {exc}") from None


def parse_campaign(
    text: str, source: str = "<campaign>", *, attributes: Mapping[str, str] | None = None
) -> CampaignSpec:
    """Parse and validate a campaign file's text.

    Args:
        text: the YAML source.
        source: the file name used in error messages.
        attributes: the program's declared member attributes (for ``attributes.<key>``).

    Raises:
        CampaignFileError: listing every problem with its line and key path.
    """
    try:
        data = yaml.safe_load(text)
        lines = _line_map(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise CampaignFileError(
            source, [Problem("(file)", f"not valid YAML: {exc}", line)]
        ) from None
    if not isinstance(data, dict):
        raise CampaignFileError(source, [Problem("(file)", "must be a mapping of keys", 1)])
    problems: list[Problem] = []
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = _dotted(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(Problem(path, message, _nearest_line(lines, error["loc"])))
        raise CampaignFileError(source, problems) from None
    if isinstance(spec.segment, str):
        if not SLUG.match(spec.segment):
            line = _nearest_line(lines, ("segment",))
            raise CampaignFileError(
                source, [Problem("segment", "not a saved segment's name", line)]
            )
    elif spec.segment is not None:
        try:
            parse_rule(spec.segment, "segment", attributes=attributes)
        except RuleError as exc:
            loc = _loc_from_path(exc.path)
            problems.append(Problem(exc.path, exc.problem, _nearest_line(lines, loc)))
            raise CampaignFileError(source, problems) from None
    return spec
