"""A rule as SQL (:func:`compile_rule`) and as plain Python (:func:`evaluate_rule`).

The NULL rule: a condition on a missing (NULL) value is FALSE, never NULL.
Each compiled leaf is built so that it cannot be NULL (comparisons are guarded
with ``value IS NOT NULL``, aggregates are coalesced), hence ``NOT`` inverts
every leaf exactly, unlike SQL's own three-valued logic where
``NOT (tier = 'gold')`` drops members with no tier. :func:`evaluate_rule`
follows the same rule in Python and is the reference the SQL is tested against.

Values are always bound parameters; nothing a rule holds is formatted into SQL.
Nothing here opens a session: callers build and run their own queries.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, false, not_, or_, true

from store.models import Member, utcnow

from ._errors import RuleError
from ._fields import ATTRIBUTE_KEY, FIELDS, FieldSpec
from ._operators import OPERATORS, Frame, Operator
from ._parse import CAMPAIGN_NAME
from ._predicates import (
    CHANNELS,
    PURPOSES,
    consented_sql,
    consented_value,
    points_expiring_sql,
    points_expiring_value,
    reachable_sql,
    reachable_value,
    received_sql,
    received_value,
)
from ._rules import (
    All,
    Attribute,
    Condition,
    Consented,
    Not,
    PointsExpiring,
    Reachable,
    Received,
    Rule,
)
from ._rules import Any as AnyOf
from ._sql import attribute_sql, attribute_value, instant_text
from ._types import FieldType, Scalar, describe

__all__ = ["audience_filter", "compile_rule", "evaluate_rule"]


def compile_rule(rule: Rule, *, now: datetime | None = None) -> ColumnElement[bool]:
    """Turn a rule into a boolean SQL expression over :class:`store.models.Member`.

    Args:
        rule: a rule tree, normally from :func:`segments.parse_rule`.
        now: the instant relative dates resolve against; the current UTC time if omitted.

    Returns:
        An expression that is TRUE or FALSE (never NULL) for every member;
        use it in ``select(Member).where(...)``. Deleted members are not
        excluded here; see :func:`audience_filter`.

    Raises:
        RuleError: a hand-built leaf names an unknown field, operator, channel or campaign.
    """
    return _compile(rule, _now(now))


def evaluate_rule(
    rule: Rule, member: Mapping[str, typing.Any], *, now: datetime | None = None
) -> bool:
    """Decide in plain Python whether a member matches; the reference for :func:`compile_rule`.

    Args:
        rule: a rule tree, normally from :func:`segments.parse_rule`.
        member: column name to value, typed as the columns are (instants as
            aware datetimes; a missing key or ``None`` is a missing value), plus
            ``attributes`` (the decoded JSON), ``lots`` (``{points, redeemed,
            expires_at}``), ``consents`` (``{channel: status}``),
            ``push_tokens`` (``{revoked_at}``) and ``received`` (``{campaign,
            status, sent_at}``), each optional.
        now: the instant relative dates resolve against; the current UTC time if omitted.

    Returns:
        Whether the member matches, by the same NULL rule as the SQL.

    Raises:
        RuleError: a hand-built leaf names an unknown field, operator, channel or campaign.
    """
    return _evaluate(rule, member, _now(now))


def audience_filter(rule: Rule | None, *, now: datetime | None = None) -> ColumnElement[bool]:
    """The WHERE clause of a campaign's audience: the rule's members that are not deleted.

    Args:
        rule: the segment rule, or ``None`` for every member.
        now: the instant relative dates resolve against; the current UTC time if omitted.

    Returns:
        ``compile_rule(rule)`` (``TRUE`` when ``rule`` is ``None``) and ``deleted_at IS NULL``.
    """
    matches = true() if rule is None else compile_rule(rule, now=now)
    return and_(Member.deleted_at.is_(None), matches)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    return now.astimezone(UTC)


def _compile(rule: Rule, now: datetime) -> ColumnElement[bool]:
    if isinstance(rule, All):
        return and_(*(_compile(r, now) for r in rule.rules)) if rule.rules else true()
    if isinstance(rule, AnyOf):
        return or_(*(_compile(r, now) for r in rule.rules)) if rule.rules else false()
    if isinstance(rule, Not):
        return not_(_compile(rule.rule, now))
    if isinstance(rule, Condition):
        spec, op = _field(rule)
        return op.sql(spec.sql(now), rule.value, Frame(now=now))
    if isinstance(rule, Attribute):
        op, frame = _attribute(rule, now)
        value = attribute_sql(Member.attributes.expression, rule.key, rule.type)
        return op.sql(value, rule.value, frame)
    if isinstance(rule, PointsExpiring):
        op = _operator(rule.op, FieldType.INTEGER, "points_expiring")
        return op.sql(points_expiring_sql(rule.within, now), rule.value, Frame(now=now))
    if isinstance(rule, Reachable):
        return reachable_sql(_channel(rule.channel))
    if isinstance(rule, Consented):
        return consented_sql(_channel(rule.channel), _purpose(rule.purpose))
    if isinstance(rule, Received):
        return received_sql(_campaign(rule.campaign), rule.within_last, now)
    typing.assert_never(rule)


def _evaluate(rule: Rule, member: Mapping[str, typing.Any], now: datetime) -> bool:
    if isinstance(rule, All):
        return all(_evaluate(inner, member, now) for inner in rule.rules)
    if isinstance(rule, AnyOf):
        return any(_evaluate(inner, member, now) for inner in rule.rules)
    if isinstance(rule, Not):
        return not _evaluate(rule.rule, member, now)
    if isinstance(rule, Condition):
        spec, op = _field(rule)
        return op.python(spec.python(member, now), rule.value, Frame(now=now))
    if isinstance(rule, Attribute):
        op, frame = _attribute(rule, now)
        attributes = member.get("attributes")
        raw = attributes.get(rule.key) if isinstance(attributes, Mapping) else None
        return op.python(attribute_value(raw, rule.type), rule.value, frame)
    if isinstance(rule, PointsExpiring):
        op = _operator(rule.op, FieldType.INTEGER, "points_expiring")
        total = points_expiring_value(member, rule.within, now)
        return op.python(total, rule.value, Frame(now=now))
    if isinstance(rule, Reachable):
        return reachable_value(member, _channel(rule.channel))
    if isinstance(rule, Consented):
        return consented_value(member, _channel(rule.channel), _purpose(rule.purpose))
    if isinstance(rule, Received):
        return received_value(member, _campaign(rule.campaign), rule.within_last, now)
    typing.assert_never(rule)


def _encode_instant(value: Scalar) -> Scalar:
    return instant_text(value) if isinstance(value, datetime) else value


def _attribute(rule: Attribute, now: datetime) -> tuple[Operator, Frame]:
    if not ATTRIBUTE_KEY.fullmatch(rule.key):
        raise RuleError("attribute.key", f"invalid attribute key {describe(rule.key)}")
    op = _operator(rule.op, rule.type, f"attributes.{rule.key}")
    if rule.type is FieldType.INSTANT:  # instant attributes are compared as UTC text
        return op, Frame(now=now, encode=_encode_instant)
    return op, Frame(now=now)


def _field(condition: Condition) -> tuple[FieldSpec, Operator]:
    spec = FIELDS.get(condition.field)
    if spec is None:
        raise RuleError("condition.field", f"unknown field {describe(condition.field)}")
    return spec, _operator(condition.op, spec.type, spec.name)


def _operator(name: str, field_type: FieldType, field: str) -> Operator:
    op = OPERATORS.get(name)
    if op is None:
        raise RuleError("condition.op", f"unknown operator {describe(name)}")
    if not op.applies_to(field_type):
        raise RuleError(
            "condition.op",
            f'operator "{name}" does not apply to {field_type.value} field "{field}"',
        )
    return op


def _channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise RuleError("reachable", f"unknown channel {describe(channel)}")
    return channel


def _purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise RuleError("consented.for", f"unknown category {describe(purpose)}")
    return purpose


def _campaign(name: str) -> str:
    if not CAMPAIGN_NAME.fullmatch(name):
        raise RuleError("received", f"{describe(name)} is not a campaign name")
    return name
