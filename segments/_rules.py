"""The rule tree: frozen, keyword-only values that :func:`segments.parse_rule` builds.

A rule is a group (:class:`All`, :class:`Any`, :class:`Not`) or a leaf: a
:class:`Condition` on a member column or ``next_expiry``, an :class:`Attribute`
condition, or one of the predicates :class:`PointsExpiring`,
:class:`Reachable`, :class:`Consented` and :class:`Received`. Values held by a
leaf are already checked and converted (instants are aware UTC datetimes,
durations are timedeltas, lists are tuples), so a tree built by the parser can
be compiled or evaluated without further checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

from ._types import FieldType, Operand, Scalar

__all__ = [
    "All",
    "Any",
    "Attribute",
    "Condition",
    "Consented",
    "Not",
    "Operand",
    "PointsExpiring",
    "Reachable",
    "Received",
    "Rule",
    "Scalar",
]


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


@dataclass(frozen=True, kw_only=True, slots=True)
class Attribute:
    """A leaf on a program attribute: ``attributes.<key> op value``, typed as declared."""

    key: str
    type: FieldType
    op: str
    value: Operand = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PointsExpiring:
    """Unredeemed points expiring within ``within`` from now, compared: ``op value``."""

    within: timedelta
    op: str
    value: Operand = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Reachable:
    """The member can be reached on ``channel`` (same meaning as the delivery policy)."""

    channel: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Consented:
    """The member's consent on ``channel`` allows messages of category ``purpose``."""

    channel: str
    purpose: str = "marketing"


@dataclass(frozen=True, kw_only=True, slots=True)
class Received:
    """The member was sent ``campaign`` (sent or delivered), within ``within_last`` if given."""

    campaign: str
    within_last: timedelta | None = None


Leaf: TypeAlias = Condition | Attribute | PointsExpiring | Reachable | Consented | Received
Rule: TypeAlias = All | Any | Not | Leaf
