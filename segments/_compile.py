"""A rule as SQL (:func:`compile_rule`) and as plain Python (:func:`evaluate_rule`).

The NULL rule: a condition on a missing (NULL) value is FALSE, never NULL.
Each compiled leaf is built so that it cannot be NULL (comparisons are guarded
with ``value IS NOT NULL``, aggregates are coalesced), hence ``NOT`` inverts
every leaf exactly, unlike SQL's own three-valued logic where
``NOT (tier = 'gold')`` drops members with no tier. :func:`evaluate_rule`
follows the same rule in Python and is the reference the SQL is tested against.

Values are always bound parameters; nothing a rule holds is formatted into SQL.
Nothing here opens a session: callers build and run their own queries.

Two shapes of the same rule
---------------------------
By default a predicate over another table is a correlated subquery per member
(an index probe each): right when the query is restricted to a few members
(``id IN (...)``, one member's trigger, a page read in id order), since only
those members are probed. With ``whole_audience=True`` the compiled clause is
shaped for a query over every member at once (a count, a snapshot, every id in
one stream), where PostgreSQL does better with one join over the other table
than with a million probes:

- ``points_expiring`` is ``EXISTS`` over ``member_id ... GROUP BY member_id
  HAVING <test>`` (one hash aggregate over the lots in the window). A member
  with no such lots has 0 points; when the operator holds for 0 (``< 100``,
  ``= 0``, ``!= 5``), the clause is instead ``NOT EXISTS`` over the members
  whose sum fails the test, so members without lots still match.
- ``any`` of rules that each hold only for members of a set (``reachable:
  push``, ``consented`` for marketing, ``received``, such a points sum, or an
  ``all`` containing one of these) is one ``EXISTS`` over the union of those
  sets, each row tagged with its branch, and the rest of each branch tested
  on the pair: PostgreSQL cannot turn ``EXISTS`` under ``OR`` into a join, but
  a single ``EXISTS`` under ``AND`` becomes a hash semi-join.

At the top level of a WHERE clause PostgreSQL turns both into semi- or
anti-joins; nested under an ``OR`` or ``NOT`` it runs them per member with the
member's id pushed into the subquery, so they cost what the correlated forms
cost. They select exactly the same members (tested against
:func:`evaluate_rule` on both engines); what they cost when the query reads a
handful of members is a full pass over the window's lots or the sets, which is
why they are not the default.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    false,
    literal,
    not_,
    or_,
    select,
    true,
    union_all,
)

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
    opted_in,
    points_expiring_members,
    points_expiring_sql,
    points_expiring_value,
    push_holders,
    reachable_sql,
    reachable_value,
    received_sql,
    received_value,
    receivers,
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


def compile_rule(
    rule: Rule, *, now: datetime | None = None, whole_audience: bool = False
) -> ColumnElement[bool]:
    """Turn a rule into a boolean SQL expression over :class:`store.models.Member`.

    Args:
        rule: a rule tree, normally from :func:`segments.parse_rule`.
        now: the instant relative dates resolve against; the current UTC time if omitted.
        whole_audience: shape it for a query over every member (a count, a full
            stream) rather than a few; the same members either way (see the module doc).

    Returns:
        An expression that is TRUE or FALSE (never NULL) for every member;
        use it in ``select(Member).where(...)``. Deleted members are not
        excluded here; see :func:`audience_filter`.

    Raises:
        RuleError: a hand-built leaf names an unknown field, operator, channel or campaign.
    """
    return _Compiler(_now(now), whole_audience).rule(rule)


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


def audience_filter(
    rule: Rule | None, *, now: datetime | None = None, whole_audience: bool = False
) -> ColumnElement[bool]:
    """The WHERE clause of a campaign's audience: the rule's members that are not deleted.

    Args:
        rule: the segment rule, or ``None`` for every member.
        now: the instant relative dates resolve against; the current UTC time if omitted.
        whole_audience: as for :func:`compile_rule`: ``True`` for a query that reads
            the whole audience at once (count, snapshot, one stream of every id),
            ``False`` for one restricted to a few members or read a page at a time.

    Returns:
        ``compile_rule(rule)`` (``TRUE`` when ``rule`` is ``None``) and ``deleted_at IS NULL``.
    """
    matches = true() if rule is None else compile_rule(rule, now=now, whole_audience=whole_audience)
    return and_(Member.deleted_at.is_(None), matches)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    return now.astimezone(UTC)


class _Compiler:
    """Compiles one rule at one instant, per member or for the whole audience."""

    def __init__(self, now: datetime, whole_audience: bool) -> None:
        self.now = now
        self.whole = whole_audience

    def rule(self, rule: Rule) -> ColumnElement[bool]:
        now = self.now
        if isinstance(rule, All):
            return and_(*(self.rule(r) for r in rule.rules)) if rule.rules else true()
        if isinstance(rule, AnyOf):
            if not rule.rules:
                return false()
            united = self._united(rule.rules) if self.whole else None
            return united if united is not None else or_(*(self.rule(r) for r in rule.rules))
        if isinstance(rule, Not):
            return not_(self.rule(rule.rule))
        if isinstance(rule, Condition):
            spec, op = _field(rule)
            return op.sql(spec.sql(now), rule.value, Frame(now=now))
        if isinstance(rule, Attribute):
            op, frame = _attribute(rule, now)
            value = attribute_sql(Member.attributes.expression, rule.key, rule.type)
            return op.sql(value, rule.value, frame)
        if isinstance(rule, PointsExpiring):
            op = _operator(rule.op, FieldType.INTEGER, "points_expiring")
            if self.whole:
                return self._points_expiring(rule, op)
            return op.sql(points_expiring_sql(rule.within, now), rule.value, Frame(now=now))
        if isinstance(rule, Reachable):
            return reachable_sql(_channel(rule.channel))
        if isinstance(rule, Consented):
            return consented_sql(_channel(rule.channel), _purpose(rule.purpose))
        if isinstance(rule, Received):
            return received_sql(_campaign(rule.campaign), rule.within_last, now)
        typing.assert_never(rule)

    def _points_expiring(self, rule: PointsExpiring, op: Operator) -> ColumnElement[bool]:
        """``EXISTS`` over the members whose sum passes, or ``NOT EXISTS`` over those it fails."""
        frame = Frame(now=self.now)
        if not op.python(0, rule.value, frame):  # members without lots (sum 0) cannot match
            return _exists_in(self._passing(rule, op))
        failing = points_expiring_members(
            rule.within, self.now, lambda total: not_(op.sql(total, rule.value, frame))
        )
        return not_(_exists_in(failing))

    def _passing(self, rule: PointsExpiring, op: Operator) -> Select[int]:
        frame = Frame(now=self.now)
        return points_expiring_members(
            rule.within, self.now, lambda total: op.sql(total, rule.value, frame)
        )

    def _member_set(self, rule: Rule) -> Select[int] | None:
        """The ids (with repeats) of exactly the members ``rule`` holds for, if it is such a set."""
        if isinstance(rule, Reachable) and _channel(rule.channel) == "push":
            return push_holders()
        if isinstance(rule, Consented) and _purpose(rule.purpose) == "marketing":
            return opted_in(_channel(rule.channel))
        if isinstance(rule, Received):
            return receivers(_campaign(rule.campaign), rule.within_last, self.now)
        if isinstance(rule, PointsExpiring):
            op = _operator(rule.op, FieldType.INTEGER, "points_expiring")
            if not op.python(0, rule.value, Frame(now=self.now)):
                return self._passing(rule, op)
        return None

    def _split(self, rule: Rule) -> tuple[Select[int], ColumnElement[bool]] | None:
        """``rule`` as (a set its members must be in, what else they must pass), if it has one."""
        members = self._member_set(rule)
        if members is not None:
            return members, true()
        if isinstance(rule, All):
            for i, inner in enumerate(rule.rules):
                members = self._member_set(inner)
                if members is not None:
                    # The rest is tested per candidate pair: the per-member forms fit there.
                    rest = [r for j, r in enumerate(rule.rules) if j != i]
                    per_member = _Compiler(self.now, whole_audience=False)
                    return members, and_(true(), *(per_member.rule(r) for r in rest))
        return None

    def _united(self, rules: tuple[Rule, ...]) -> ColumnElement[bool] | None:
        """``any`` as one ``EXISTS`` over the union of its branches' sets; None if one has none."""
        if len(rules) < 2:
            return None
        splits = [self._split(r) for r in rules]
        if any(split is None for split in splits):
            return None
        arms, tests = [], []
        for branch, split in enumerate(splits):
            assert split is not None
            members, rest = split
            arms.append(members.add_columns(literal(branch, Integer).label("branch")))
            tests.append((branch, rest))
        united = union_all(*arms).subquery("any_of")
        matched = or_(*(and_(united.c.branch == literal(b, Integer), rest) for b, rest in tests))
        return select(united.c.member_id).where(united.c.member_id == Member.id, matched).exists()


def _exists_in(members: Select[int]) -> ColumnElement[bool]:
    """``EXISTS`` the member in ``members``, a set query PostgreSQL can plan as one join."""
    found = members.subquery()
    return select(found.c.member_id).where(found.c.member_id == Member.id).exists()


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
