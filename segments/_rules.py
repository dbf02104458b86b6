"""The rule tree: frozen, keyword-only values that :func:`segments.parse_rule` builds.

A rule is one of :class:`All`, :class:`Any`, :class:`Not` or :class:`Condition`.
Values held by a :class:`Condition` are already checked and converted
(instants are aware UTC datetimes, ``in`` lists are tuples), so a tree built by
the parser can be compiled or evaluated without further checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

__all__ = ["All", "Any", "Condition", "Not", "Operand", "Rule", "Scalar"]

Scalar: TypeAlias = str | int | datetime
"""One value a field can be compared with."""

Operand: TypeAlias = Scalar | tuple[Scalar, ...] | None
"""What a condition compares with: a value, a list (``in``) or nothing (``is null``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class All:
    """Matches when every one of ``rules`` matches (an empty ``All`` matches everyone)."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Any:
    """Matches when at least one of ``rules`` matches (an empty ``Any`` matches no one)."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Not:
    """Matches exactly the members ``rule`` does not match (never unknown, see NULL rule)."""

    rule: Rule


@dataclass(frozen=True, kw_only=True, slots=True)
class Condition:
    """A leaf: ``field op value``, e.g. ``points_balance >= 500``."""

    field: str
    op: str
    value: Operand = None


Rule: TypeAlias = All | Any | Not | Condition
