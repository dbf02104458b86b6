"""A rule as SQL (:func:`compile_rule`) and as plain Python (:func:`evaluate_rule`).

The NULL rule: a condition on a missing (NULL) value is FALSE, never NULL.
Each compiled leaf is built so that it cannot be NULL (comparisons are guarded
with ``column IS NOT NULL``), hence ``NOT`` inverts every leaf exactly, unlike
SQL's own three-valued logic where ``NOT (tier = 'gold')`` drops members with
no tier. :func:`evaluate_rule` follows the same rule in Python and is the
reference the SQL is tested against.

Values are always bound parameters; nothing a rule holds is formatted into SQL.
Nothing here opens a session: callers build and run their own queries.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping

from sqlalchemy import ColumnElement, and_, false, not_, or_, true

from store.models import Member

from ._errors import RuleError
from ._fields import FIELDS, FieldSpec, describe
from ._operators import OPERATORS, Operator
from ._rules import All, Condition, Not, Rule
from ._rules import Any as AnyOf

__all__ = ["audience_filter", "compile_rule", "evaluate_rule"]


def compile_rule(rule: Rule) -> ColumnElement[bool]:
    """Turn a rule into a boolean SQL expression over :class:`store.models.Member`'s columns.

    Args:
        rule: a rule tree, normally from :func:`segments.parse_rule`.

    Returns:
        An expression that is TRUE or FALSE (never NULL) for every member;
        use it in ``select(Member).where(...)``. Deleted members are not
        excluded here; see :func:`audience_filter`.

    Raises:
        RuleError: a hand-built :class:`Condition` names an unknown field or operator.
    """
    if isinstance(rule, All):
        return and_(*map(compile_rule, rule.rules)) if rule.rules else true()
    if isinstance(rule, AnyOf):
        return or_(*map(compile_rule, rule.rules)) if rule.rules else false()
    if isinstance(rule, Not):
        return not_(compile_rule(rule.rule))
    if isinstance(rule, Condition):
        spec, op = _lookup(rule)
        return op.sql(spec.column, rule.value)
    typing.assert_never(rule)


def evaluate_rule(rule: Rule, member: Mapping[str, typing.Any]) -> bool:
    """Decide in plain Python whether a member matches; the reference for :func:`compile_rule`.

    Args:
        rule: a rule tree, normally from :func:`segments.parse_rule`.
        member: field name to value, typed as the columns are (instants as
            aware datetimes); a missing key or ``None`` is a missing value.

    Returns:
        Whether the member matches, by the same NULL rule as the SQL.

    Raises:
        RuleError: a hand-built :class:`Condition` names an unknown field or operator.
    """
    if isinstance(rule, All):
        return all(evaluate_rule(inner, member) for inner in rule.rules)
    if isinstance(rule, AnyOf):
        return any(evaluate_rule(inner, member) for inner in rule.rules)
    if isinstance(rule, Not):
        return not evaluate_rule(rule.rule, member)
    if isinstance(rule, Condition):
        spec, op = _lookup(rule)
        return op.python(member.get(spec.name), rule.value)
    typing.assert_never(rule)


def audience_filter(rule: Rule | None) -> ColumnElement[bool]:
    """The WHERE clause of a campaign's audience: the rule's members that are not deleted.

    Args:
        rule: the segment rule, or ``None`` for every member.

    Returns:
        ``compile_rule(rule)`` (``TRUE`` when ``rule`` is ``None``) and ``deleted_at IS NULL``.
    """
    matches = true() if rule is None else compile_rule(rule)
    return and_(Member.deleted_at.is_(None), matches)


def _lookup(condition: Condition) -> tuple[FieldSpec, Operator]:
    spec = FIELDS.get(condition.field)
    if spec is None:
        raise RuleError("condition.field", f"unknown field {describe(condition.field)}")
    op = OPERATORS.get(condition.op)
    if op is None:
        raise RuleError("condition.op", f"unknown operator {describe(condition.op)}")
    return spec, op
