"""The program policy file: time zone, quiet hours, frequency caps, categories, attributes.

One YAML file per program, read and validated when a process starts::

    default_time_zone: America/New_York      # members without (or with an unknown) time zone
    quiet_hours:                              # member-local; sends inside are deferred to the end
      sms:  {start: "21:00", end: "08:00"}    # sms has 21:00-08:00 when the key is absent
      push: {start: "22:00", end: "07:00"}
      email: null                             # no quiet hours
    caps:
      - {name: marketing-weekly, scope: all, window: 7d, limit: 3, categories: [marketing]}
      - {name: sms-daily, scope: sms, window: calendar_day, limit: 1,
         categories: [marketing, service]}
    categories: [marketing, service, transactional]   # transactional is always cap-exempt
    attributes: {favourite_store: text, lifetime_spend: number, vip_since: instant}
    postal_lead_business_days: 5

Every key is optional; :meth:`Program.default` is what an absent file means
(UTC, sms quiet 21:00-08:00, no caps). :func:`parse_program` raises
:class:`ProgramFileError` naming the file, line and key of every problem, in
the style of campaign files. Times are written in quotes: YAML 1.1 reads an
unquoted ``21:00`` as the number 1260, and that is refused with a message
saying so. Durations are a whole number and a unit: ``30m``, ``12h``, ``7d``,
``2w``. ``direct_mail`` takes no quiet hours (printed mail arrives by post).
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from channels import CHANNEL_NAMES

from .yamlfile import (
    LineMap,
    Problem,
    YamlSyntaxError,
    dotted,
    nearest_line,
    read_yaml,
    validation_problems,
)

__all__ = [
    "CALENDAR_WINDOWS",
    "DEFAULT_CATEGORIES",
    "DEFAULT_QUIET_HOURS",
    "EXEMPT_CATEGORY",
    "SCOPES",
    "CapRule",
    "CapWindow",
    "Program",
    "ProgramFileError",
    "QuietHours",
    "format_duration",
    "load_program",
    "parse_duration",
    "parse_program",
]

#: The category no cap ever counts.
EXEMPT_CATEGORY = "transactional"
DEFAULT_CATEGORIES = ("marketing", "service", EXEMPT_CATEGORY)
CALENDAR_WINDOWS = ("calendar_day", "calendar_week")
SCOPES = ("all", *CHANNEL_NAMES)
#: Attribute types, as the segment rule language names them (``segments`` FieldType values).
AttributeType = Literal["text", "integer", "number", "boolean", "instant", "text_list"]
DEFAULT_TIME_ZONE = "UTC"
DEFAULT_POSTAL_LEAD_BUSINESS_DAYS = 5
#: The longest rolling window (the ledger is read this far back to rebuild counters).
MAX_ROLLING_WINDOW = timedelta(days=366)

#: A rolling duration, or a calendar day / ISO week in the member's time zone.
CapWindow = timedelta | Literal["calendar_day", "calendar_week"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_UNITS["w"] = timedelta(weeks=1)
_WALL_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_duration(text: str) -> timedelta:
    """``7d`` as seven days; units ``m``, ``h``, ``d``, ``w``.

    Raises:
        ValueError: not a positive whole number and a unit.
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 12h, 7d or 2w")
    return int(match[1]) * _UNITS[match[2]]


def format_duration(value: timedelta) -> str:
    """``value`` in the largest of days, hours or minutes that says it exactly (``7d``, ``36h``)."""
    minutes = int(value.total_seconds() // 60)
    for unit, size in (("d", 24 * 60), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


@dataclass(frozen=True, kw_only=True)
class QuietHours:
    """A member-local window of wall times, ``start`` inclusive to ``end`` exclusive.

    ``start > end`` wraps midnight (21:00-08:00); ``start == end`` is refused.
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("start and end are the same time; use null for no quiet hours")

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, kw_only=True)
class CapRule:
    """At most ``limit`` messages of ``categories`` per ``window`` on ``scope`` (a channel, or all).

    ``transactional`` is exempt by definition, so a rule that lists it is refused.
    """

    name: str
    scope: str
    window: CapWindow
    limit: int
    categories: frozenset[str]

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; choose from {', '.join(SCOPES)}")
        if isinstance(self.window, timedelta):
            if not timedelta(minutes=1) <= self.window <= MAX_ROLLING_WINDOW:
                raise ValueError("a rolling window is between 1m and 366d")
        elif self.window not in CALENDAR_WINDOWS:
            raise ValueError(f"unknown window {self.window!r}")
        if isinstance(self.limit, bool) or self.limit < 1:
            raise ValueError("limit must be a whole number of at least 1")
        if not self.categories:
            raise ValueError("name at least one category")
        if EXEMPT_CATEGORY in self.categories:
            raise ValueError(f"{EXEMPT_CATEGORY} is exempt from caps and cannot be counted")

    @property
    def rolling(self) -> bool:
        """True for a rolling duration, False for a calendar day or week."""
        return isinstance(self.window, timedelta)

    @property
    def window_label(self) -> str:
        """The window as written: ``7d``, ``calendar_day``."""
        window = self.window
        return format_duration(window) if isinstance(window, timedelta) else window

    def applies(self, channel: str, category: str) -> bool:
        """Whether a message of ``category`` on ``channel`` counts against this rule."""
        return (
            category != EXEMPT_CATEGORY
            and category in self.categories
            and self.scope in ("all", channel)
        )

    def __str__(self) -> str:
        return f"{self.name} {self.limit}/{self.window_label}"


DEFAULT_QUIET_HOURS: Mapping[str, QuietHours | None] = MappingProxyType(
    {"sms": QuietHours(start=time(21, 0), end=time(8, 0))}
)


@dataclass(frozen=True, kw_only=True)
class Program:
    """A validated program policy file (see the module docstring)."""

    default_time_zone: str = DEFAULT_TIME_ZONE
    quiet_hours: Mapping[str, QuietHours | None] = field(
        default_factory=lambda: DEFAULT_QUIET_HOURS
    )
    caps: tuple[CapRule, ...] = ()
    categories: frozenset[str] = frozenset(DEFAULT_CATEGORIES)
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    postal_lead_business_days: int = DEFAULT_POSTAL_LEAD_BUSINESS_DAYS

    @classmethod
    def default(cls) -> Program:
        """The policy when no file is configured: UTC, sms quiet 21:00-08:00, no caps."""
        return cls()

    def quiet_hours_for(self, channel: str) -> QuietHours | None:
        """The channel's quiet window, or None when it has none."""
        return self.quiet_hours.get(channel)

    def caps_for(self, channel: str, category: str) -> tuple[CapRule, ...]:
        """The rules a message of ``category`` on ``channel`` counts against."""
        return tuple(rule for rule in self.caps if rule.applies(channel, category))


class ProgramFileError(ValueError):
    """The program policy file cannot be used; every problem is listed."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}, {p}" for p in problems))


def _wall_time(value: Any) -> time:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError('write times in quotes, e.g. "21:00" (unquoted, YAML reads a number)')
    match = _WALL_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{value!r} is not a time; write "HH:MM", e.g. "21:00"')
    return time(int(match[1]), int(match[2]))


class _QuietHoursFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _times(cls, value: Any) -> time:
        return _wall_time(value)

    @model_validator(mode="after")
    def _not_empty(self) -> _QuietHoursFile:
        QuietHours(start=self.start, end=self.end)
        return self


class _CapFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scope: Literal["all", "sms", "email", "push", "direct_mail"]
    window: CapWindow
    limit: Annotated[int, Field(strict=True, ge=1)]
    categories: list[str] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("must be lower-case letters, digits, '-' or '_' (at most 64)")
        return value

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        if value in CALENDAR_WINDOWS:
            return value
        if not isinstance(value, str):
            raise ValueError("write a duration (7d, 12h) or calendar_day or calendar_week")
        window = parse_duration(value)
        if window > MAX_ROLLING_WINDOW:
            raise ValueError("a rolling window is at most 366d")
        return window

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        if EXEMPT_CATEGORY in value:
            raise ValueError(f"{EXEMPT_CATEGORY} is always exempt from caps; remove it")
        if len(set(value)) != len(value):
            raise ValueError("a category is named twice")
        return value


class _ProgramFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_time_zone: str = DEFAULT_TIME_ZONE
    quiet_hours: dict[str, _QuietHoursFile | None] | None = None
    caps: list[_CapFile] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    attributes: dict[str, AttributeType] = Field(default_factory=dict)
    postal_lead_business_days: Annotated[int, Field(strict=True, ge=0, le=60)] = (
        DEFAULT_POSTAL_LEAD_BUSINESS_DAYS
    )

    @field_validator("default_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _SLUG.match(name):
                raise ValueError(f"category {name!r}: use lower-case letters, digits, '-', '_'")
        if len(set(value)) != len(value):
            raise ValueError("a category is named twice")
        return value


def _cross_check(raw: _ProgramFile) -> list[tuple[tuple[int | str, ...], str]]:
    """Problems that involve more than one key, each with the key path at fault."""
    found: list[tuple[tuple[int | str, ...], str]] = []
    for channel, window in (raw.quiet_hours or {}).items():
        if channel not in CHANNEL_NAMES:
            choices = ", ".join(CHANNEL_NAMES)
            found.append((("quiet_hours", channel), f"unknown channel; choose from {choices}"))
        elif channel == "direct_mail" and window is not None:
            found.append((("quiet_hours", channel), "direct_mail has no quiet hours; use null"))
    seen: set[str] = set()
    for i, cap in enumerate(raw.caps):
        if cap.name in seen:
            found.append((("caps", i, "name"), f"a cap named {cap.name!r} is already declared"))
        seen.add(cap.name)
        for j, category in enumerate(cap.categories):
            if category not in raw.categories:
                listed = ", ".join(raw.categories)
                found.append(
                    (("caps", i, "categories", j), f"unknown category {category!r} ({listed})")
                )
    for name in raw.attributes:
        if not _ATTRIBUTE.match(name):
            found.append((("attributes", name), "an attribute name is letters, digits and '_'"))
    return found


def _program(raw: _ProgramFile) -> Program:
    quiet: dict[str, QuietHours | None] = dict(DEFAULT_QUIET_HOURS)
    for channel, window in (raw.quiet_hours or {}).items():
        quiet[channel] = None if window is None else QuietHours(start=window.start, end=window.end)
    caps = tuple(
        CapRule(
            name=cap.name,
            scope=cap.scope,
            window=cap.window,
            limit=cap.limit,
            categories=frozenset(cap.categories),
        )
        for cap in raw.caps
    )
    return Program(
        default_time_zone=raw.default_time_zone,
        quiet_hours=MappingProxyType(quiet),
        caps=caps,
        categories=frozenset(raw.categories),
        attributes=MappingProxyType(dict(raw.attributes)),
        postal_lead_business_days=raw.postal_lead_business_days,
    )


def parse_program(text: str, source: str = "<program>") -> Program:
    """Parse and validate a program policy file's text.

    Args:
        text: the YAML source.
        source: the file name used in error messages.

    Raises:
        ProgramFileError: listing every problem with its line and key path.
    """
    try:
        data, lines = read_yaml(text)
    except YamlSyntaxError as exc:
        raise ProgramFileError(source, [exc.problem]) from None
    if not isinstance(data, dict):
        raise ProgramFileError(source, [Problem("(file)", "must be a mapping of keys", 1)])
    try:
        raw = _ProgramFile.model_validate(data)
    except ValidationError as exc:
        raise ProgramFileError(source, validation_problems(exc, lines)) from None
    problems = [_problem(lines, loc, message) for loc, message in _cross_check(raw)]
    if problems:
        raise ProgramFileError(source, problems)
    return _program(raw)


def _problem(lines: LineMap, loc: tuple[int | str, ...], message: str) -> Problem:
    return Problem(dotted(loc), message, nearest_line(lines, loc))


def load_program(path: str | os.PathLike[str]) -> Program:
    """Read and validate the program policy file at ``path``.

    Raises:
        ProgramFileError: the file cannot be read, or has problems (each listed).
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramFileError(source, [Problem("(file)", f"cannot be read: {exc}")]) from None
    return parse_program(text, source)
