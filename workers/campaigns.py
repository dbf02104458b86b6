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

The four kinds, and the keys each one takes besides the common ones
(``name``, ``kind``, ``category``, ``description``, ``segment``,
``channels``, ``template``, ``on_ambiguous``, ``max_attempts``,
``max_sms_segments``, ``quiet_hours``):

- ``broadcast``: ``schedule`` (:class:`~workers.schedules.Schedule`: ``at``
  an instant or member-local wall time, or ``cron``; optional ``spread``);
  without one it goes out when created.
- ``expiry_reminder``: ``lead_days`` (e.g. ``[30, 7, 1]``) and ``min_points``;
  ``segment`` narrows who is reminded.
- ``welcome_sequence``: ``steps`` (each ``after``, ``template``, optional
  ``channels`` (default: the campaign's), ``only_if`` and ``unless`` rules),
  ``exit_when`` (a rule: a member matching it leaves the sequence) and
  ``restart`` (re-enrolling after the sequence ended starts it again; off by
  default); ``segment`` decides who is enrolled.
- ``triggered``: ``on: entered_segment NAME`` (a saved segment) and
  ``check_every`` (how often the segment is snapshotted, default 1h).

A key of another kind is refused, naming the kind it belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import time, timedelta
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from channels import CHANNEL_NAMES
from segments import RuleError, parse_rule

from .program import Program, QuietHours
from .schedules import Schedule, format_duration, parse_duration
from .yamlfile import Problem
from .yamlfile import dotted as _dotted
from .yamlfile import line_map as _line_map
from .yamlfile import loc_from_path as _loc_from_path
from .yamlfile import nearest_line as _nearest_line

__all__ = [
    "KINDS",
    "CampaignFileError",
    "CampaignSpec",
    "Problem",
    "Schedule",
    "Step",
    "parse_campaign",
]

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
#: Channels a campaign can send on.
SENDABLE_CHANNELS = CHANNEL_NAMES
#: The kinds of campaign.
KINDS = ("broadcast", "expiry_reminder", "welcome_sequence", "triggered")
#: The keys only one kind takes.
_KIND_KEYS = {
    "schedule": "broadcast",
    "lead_days": "expiry_reminder",
    "min_points": "expiry_reminder",
    "steps": "welcome_sequence",
    "exit_when": "welcome_sequence",
    "restart": "welcome_sequence",
    "on": "triggered",
    "check_every": "triggered",
}
_ON = re.compile(r"^entered_segment\s+([a-z0-9][a-z0-9_-]{0,99})$")


class CampaignFileError(ValueError):
    """A campaign file (or its templates) cannot be used; every problem is listed."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}, {p}" for p in problems]
        super().__init__("\n".join(lines))


def _channel_names(value: list[str] | str) -> list[str] | str:
    if value == "all":
        return value
    if not value:
        raise ValueError("name at least one channel")
    for name in value:
        if name not in CHANNEL_NAMES:
            raise ValueError(f"unknown channel {name!r}; choose from {', '.join(CHANNEL_NAMES)}")
    if len(set(value)) != len(value):
        raise ValueError("a channel is named twice")
    return value


def _slug(value: str) -> str:
    if not SLUG.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_' (at most 100 characters)")
    return value


class Step(BaseModel):
    """One message of a welcome sequence, ``after`` its enrollment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: timedelta
    template: str
    channels: list[str] | Literal["all"] | None = None
    """Preference order, or ``all``; without it, the campaign's channels."""
    only_if: dict[str, Any] | None = None
    """A rule the member must match when the step is due, or the step is skipped."""
    unless: dict[str, Any] | None = None
    """A rule that skips the step when the member matches it."""

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: Any) -> timedelta:
        after = parse_duration(value)
        if after > timedelta(days=366):
            raise ValueError("a step comes at most 366d after enrollment")
        return after

    @field_serializer("after", when_used="json")
    def _after_text(self, after: timedelta) -> str:
        # Stored as written (``2d``), so a stored spec validates again when loaded.
        return format_duration(after)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return _slug(value)

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str] | str | None) -> list[str] | str | None:
        return None if value is None else _channel_names(value)


class CampaignSpec(BaseModel):
    """A validated campaign file (see the module docstring for the kinds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    kind: Literal["broadcast", "expiry_reminder", "welcome_sequence", "triggered"]
    category: Literal["marketing", "service", "transactional"]
    description: str | None = None
    segment: dict[str, Any] | str | None = None
    """A rule, or the name of a saved segment (resolved when the campaign is created)."""
    channels: list[str] | Literal["all"] | None = None
    template: str | None = None
    schedule: Schedule | None = None
    lead_days: list[int] | None = None
    min_points: int | None = Field(default=None, ge=1)
    steps: list[Step] | None = None
    exit_when: dict[str, Any] | None = None
    restart: bool | None = None
    on: str | None = None
    check_every: timedelta | None = None
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

    @field_validator("name", "template")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        return None if value is None else _slug(value)

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str] | str | None) -> list[str] | str | None:
        return None if value is None else _channel_names(value)

    @field_validator("lead_days")
    @classmethod
    def _lead_days(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one lead time, e.g. [30, 7, 1]")
        if any(lead < 1 or lead > 366 for lead in value):
            raise ValueError("lead days are whole days from 1 to 366 before the expiry date")
        if len(set(value)) != len(value):
            raise ValueError("a lead time is named twice")
        return sorted(value, reverse=True)

    @field_validator("on")
    @classmethod
    def _on(cls, value: str | None) -> str | None:
        if value is not None and not _ON.match(value.strip()):
            raise ValueError("write `on: entered_segment NAME`, NAME a saved segment")
        return None if value is None else value.strip()

    @field_validator("check_every", mode="before")
    @classmethod
    def _check_every(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        every = parse_duration(value)
        if every < timedelta(minutes=1):
            raise ValueError("check_every must be at least 1m")
        return every

    @model_validator(mode="before")
    @classmethod
    def _keys_of_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            return data
        for key, kind in _KIND_KEYS.items():
            if data.get(key) is not None and data["kind"] != kind:
                raise ValueError(f"{key}: only a campaign of kind {kind} takes {key}")
        return data

    @model_validator(mode="after")
    def _complete(self) -> CampaignSpec:
        missing = []
        if self.kind == "welcome_sequence":
            if not self.steps:
                missing.append("steps (at least one)")
            elif self.channels is None and any(step.channels is None for step in self.steps):
                missing.append("channels (for the steps that name none)")
            if self.template is not None:
                raise ValueError("template: a welcome sequence names a template per step")
        else:
            if self.channels is None:
                missing.append("channels")
            if self.template is None:
                missing.append("template")
        if self.kind == "expiry_reminder" and self.lead_days is None:
            missing.append("lead_days")
        if self.kind == "triggered" and self.on is None:
            missing.append("on")
        if missing:
            raise ValueError(f"a {self.kind} campaign needs {', '.join(missing)}")
        return self

    # -- what the parts of loyalcast ask of a spec ---------------------------------

    @property
    def channel_list(self) -> list[str]:
        """The campaign's channels in preference order (``all`` expanded)."""
        return _expand(self.channels or [])

    @property
    def sends_on_every_channel(self) -> bool:
        """True for ``channels: all``: one message per channel, the channel in the dedupe key."""
        return self.channels == "all"

    def step_channels(self, step: Step) -> list[str]:
        """A step's channels in preference order: its own, or the campaign's."""
        return _expand(step.channels if step.channels is not None else self.channels or [])

    def messages(self) -> dict[str, list[str]]:
        """Every template this campaign renders, with the channels it renders it for."""
        if self.steps:
            found: dict[str, list[str]] = {}
            for step in self.steps:
                channels = found.setdefault(step.template, [])
                channels.extend(c for c in self.step_channels(step) if c not in channels)
            return found
        return {self.template: self.channel_list} if self.template else {}

    def rules(self) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
        """Every rule in the file with its key path: segment, steps' conditions, exit_when."""
        if isinstance(self.segment, dict):
            yield ("segment",), self.segment
        for i, step in enumerate(self.steps or []):
            if step.only_if is not None:
                yield ("steps", i, "only_if"), step.only_if
            if step.unless is not None:
                yield ("steps", i, "unless"), step.unless
        if self.exit_when is not None:
            yield ("exit_when",), self.exit_when

    @property
    def trigger_segment(self) -> str | None:
        """The saved segment a ``triggered`` campaign watches (``on: entered_segment NAME``)."""
        match = _ON.match(self.on) if self.on else None
        return match.group(1) if match else None

    @property
    def snapshot_every(self) -> timedelta:
        """How often a ``triggered`` campaign's segment is snapshotted."""
        return self.check_every or timedelta(hours=1)

    @property
    def reminder_min_points(self) -> int:
        """An expiry reminder's threshold: fewer points expiring on the date, no reminder."""
        return self.min_points or 1


def _expand(channels: list[str] | str) -> list[str]:
    return list(SENDABLE_CHANNELS) if channels == "all" else list(channels)


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
    if True in data:  # YAML 1.1 reads a bare `on:` key as the boolean true
        data["on"] = data.pop(True)
    problems: list[Problem] = []
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            key, _, rest = message.partition(": ")
            if not loc and key in data and rest:  # a model check naming its key
                loc, message = (key,), rest
            problems.append(Problem(_dotted(loc), message, _nearest_line(lines, loc)))
        raise CampaignFileError(source, problems) from None
    if isinstance(spec.segment, str) and not SLUG.match(spec.segment):
        line = _nearest_line(lines, ("segment",))
        raise CampaignFileError(source, [Problem("segment", "not a saved segment's name", line)])
    for loc, rule in spec.rules():
        where = _dotted(loc)
        try:
            parse_rule(rule, where, attributes=attributes)
        except RuleError as exc:
            at = _loc_from_path(exc.path)
            problems.append(Problem(exc.path, exc.problem, _nearest_line(lines, at)))
    if problems:
        raise CampaignFileError(source, problems)
    return spec
