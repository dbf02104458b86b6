"""The operator table: each operator's operand, the field types it applies to, its SQL and Python.

Every operator is written twice, once as SQL and once as plain Python, and the
two must agree on every member, NULLs included (see the NULL rule in
:mod:`segments`). Every operator but the null tests guards the value with
``IS NOT NULL``, so the compiled leaf is FALSE, never NULL, when the member
has no value.

Operands reach an operator already checked. Instants (and the bounds of the
relative-date operators, computed from :attr:`Frame.now`) go through
:attr:`Frame.encode` first, because instant attributes are compared as UTC text.

Adding an operator is one entry in :data:`OPERATORS`.
"""

from __future__ import annotations

import enum
import operator
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy import ColumnElement, Integer, and_, func, literal
from sqlalchemy.types import NullType

from ._sql import contains_sql, contains_value
from ._types import FieldType, Operand, Scalar

__all__ = ["OPERATORS", "Arity", "Frame", "Operator"]

Expr: typing.TypeAlias = ColumnElement[typing.Any]
SqlBuilder: typing.TypeAlias = Callable[[Expr, Operand, "Frame"], ColumnElement[bool]]
PythonTest: typing.TypeAlias = Callable[[object, Operand, "Frame"], bool]


def _same(value: Scalar) -> Scalar:
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Frame:
    """What an operator needs besides its operand: the current instant and the instant encoding."""

    now: datetime
    encode: Callable[[Scalar], Scalar] = field(default=_same)
    """Turns an instant into what the field is compared as (itself for columns)."""


class Arity(enum.Enum):
    """What an operator takes as its ``value``."""

    NONE = "none"
    """No ``value`` key at all (``is null``)."""
    ONE = "one"
    """One value of the field's type."""
    LIST = "list"
    """A non-empty list of values of the field's type (``in``)."""
    PAIR = "pair"
    """A list of two values, low then high (``between``)."""
    DURATION = "duration"
    """A duration such as ``30d`` (``within_last``)."""


_SCALARS = frozenset(
    {FieldType.TEXT, FieldType.INTEGER, FieldType.NUMBER, FieldType.BOOLEAN, FieldType.INSTANT}
)
_ORDERED = frozenset(t for t in FieldType if t.ordered)


@dataclass(frozen=True, kw_only=True, slots=True)
class Operator:
    """One operator of the rule language."""

    name: str
    arity: Arity
    types: frozenset[FieldType]
    """The field types it applies to."""
    sql: SqlBuilder
    """Builds the leaf's SQL; the result is never NULL."""
    python: PythonTest
    """The same test in Python; ``None`` stands for a missing value."""

    def applies_to(self, field_type: FieldType) -> bool:
        """Whether the operator may be used on a field of ``field_type``."""
        return field_type in self.types


def bind(expr: Expr, value: Scalar) -> Expr:
    """``value`` as a bound parameter typed like ``expr`` (so instants convert as stored)."""
    return literal(value) if isinstance(expr.type, NullType) else literal(value, expr.type)


def _encoded(value: Operand, frame: Frame) -> typing.Any:
    if isinstance(value, tuple):
        return tuple(frame.encode(v) for v in value)
    return frame.encode(value) if value is not None else None


def _guarded(
    name: str,
    sql: Callable[[Expr, typing.Any], ColumnElement[bool]],
    python: Callable[[typing.Any, typing.Any], typing.Any],
    *,
    arity: Arity = Arity.ONE,
    types: frozenset[FieldType] = _SCALARS,
) -> Operator:
    """An operator that is FALSE for a missing value, whatever it compares with."""

    def build(expr: Expr, value: Operand, frame: Frame) -> ColumnElement[bool]:
        return and_(expr.is_not(None), sql(expr, _encoded(value, frame)))

    def test(actual: object, value: Operand, frame: Frame) -> bool:
        return actual is not None and bool(python(actual, _encoded(value, frame)))

    return Operator(name=name, arity=arity, types=types, sql=build, python=test)


def _relative(
    name: str,
    bounds: Callable[[datetime, timedelta], tuple[datetime, datetime]],
    test: Callable[[typing.Any, typing.Any, typing.Any], typing.Any],
) -> Operator:
    """An operator on instants against ``(low, high)`` bounds computed from now and the duration.

    ``test(x, low, high)`` is written with ``<``, ``<=`` and ``&`` only, so the same
    function builds the SQL (on expressions) and decides in Python (on values).
    """

    def encoded(value: Operand, frame: Frame) -> tuple[Scalar, Scalar]:
        assert isinstance(value, timedelta)  # the parser guarantees it
        low, high = bounds(frame.now, value)
        return frame.encode(low), frame.encode(high)

    def build(expr: Expr, value: Operand, frame: Frame) -> ColumnElement[bool]:
        low, high = encoded(value, frame)
        return and_(expr.is_not(None), test(expr, bind(expr, low), bind(expr, high)))

    def decide(actual: object, value: Operand, frame: Frame) -> bool:
        low, high = encoded(value, frame)
        return actual is not None and bool(test(actual, low, high))

    instants = frozenset({FieldType.INSTANT})
    return Operator(name=name, arity=Arity.DURATION, types=instants, sql=build, python=decide)


def _starts_with(expr: Expr, prefix: str) -> ColumnElement[bool]:
    # substr, not LIKE: no wildcards to escape, and case-sensitive on SQLite too.
    head = func.substr(expr, literal(1, Integer), literal(len(prefix), Integer))
    return head == bind(expr, prefix)


def _null_test(name: str, *, missing: bool) -> Operator:
    def build(expr: Expr, _value: Operand, _frame: Frame) -> ColumnElement[bool]:
        return expr.is_(None) if missing else expr.is_not(None)

    def test(actual: object, _value: Operand, _frame: Frame) -> bool:
        return (actual is None) == missing

    return Operator(name=name, arity=Arity.NONE, types=frozenset(FieldType), sql=build, python=test)


def _compare(
    op: Callable[[typing.Any, typing.Any], typing.Any],
) -> Callable[[Expr, typing.Any], ColumnElement[bool]]:
    return lambda expr, value: op(expr, bind(expr, value))


def _table(*operators: Operator) -> Mapping[str, Operator]:
    return MappingProxyType({op.name: op for op in operators})


OPERATORS: Mapping[str, Operator] = _table(
    _guarded("=", _compare(operator.eq), operator.eq),
    _guarded("!=", _compare(operator.ne), operator.ne),
    _guarded("<", _compare(operator.lt), operator.lt, types=_ORDERED),
    _guarded("<=", _compare(operator.le), operator.le, types=_ORDERED),
    _guarded(">", _compare(operator.gt), operator.gt, types=_ORDERED),
    _guarded(">=", _compare(operator.ge), operator.ge, types=_ORDERED),
    _guarded(
        "between",
        lambda e, v: and_(e >= bind(e, v[0]), e <= bind(e, v[1])),
        lambda a, v: v[0] <= a <= v[1],
        arity=Arity.PAIR,
        types=_ORDERED,
    ),
    _guarded(
        "in", lambda e, v: e.in_([bind(e, x) for x in v]), lambda a, v: a in v, arity=Arity.LIST
    ),
    _guarded(
        "not in",
        lambda e, v: e.not_in([bind(e, x) for x in v]),
        lambda a, v: a not in v,
        arity=Arity.LIST,
    ),
    _guarded(
        "starts_with",
        _starts_with,
        lambda a, v: a.startswith(v),
        types=frozenset({FieldType.TEXT}),
    ),
    _guarded(
        "contains",
        contains_sql,
        contains_value,
        types=frozenset({FieldType.TEXT_LIST}),
    ),
    _relative(
        "within_last", lambda now, d: (now - d, now), lambda x, lo, hi: (lo <= x) & (x <= hi)
    ),
    _relative("older_than", lambda now, d: (now - d, now - d), lambda x, lo, _: x < lo),
    _relative("within_next", lambda now, d: (now, now + d), lambda x, lo, hi: (lo < x) & (x <= hi)),
    _null_test("is null", missing=True),
    _null_test("is not null", missing=False),
)
"""Every operator a rule may use, by the name written in rules."""
