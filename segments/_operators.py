"""The operator table: each operator's operand, the fields it applies to, its SQL and Python.

Every operator is written twice, once as SQL and once as plain Python, and the
two must agree on every member, NULLs included (see the NULL rule in
:mod:`segments`). Comparisons get that for free from :func:`_comparison`,
which guards the column with ``IS NOT NULL`` so that the compiled leaf is
FALSE, never NULL, when the member has no value.

Adding an operator is one entry in :data:`OPERATORS`.
"""

from __future__ import annotations

import enum
import operator
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import ColumnElement, and_
from sqlalchemy.orm import InstrumentedAttribute

from ._rules import Operand

__all__ = ["OPERATORS", "Arity", "Operator"]

Column: typing.TypeAlias = InstrumentedAttribute[typing.Any]
SqlBuilder: typing.TypeAlias = Callable[[Column, Operand], ColumnElement[bool]]
PythonTest: typing.TypeAlias = Callable[[object, Operand], bool]


class Arity(enum.Enum):
    """What an operator takes as its ``value``."""

    NONE = "none"
    """No ``value`` key at all (``is null``)."""
    ONE = "one"
    """One value of the field's type."""
    LIST = "list"
    """A non-empty list of values of the field's type."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Operator:
    """One operator of the rule language."""

    name: str
    arity: Arity
    ordered_only: bool
    """Applies only to fields whose type is ordered (not to text)."""
    sql: SqlBuilder
    """Builds the leaf's SQL; the result is never NULL."""
    python: PythonTest
    """The same test in Python; ``None`` stands for a missing value."""


def _comparison(
    name: str,
    sql: Callable[[Column, typing.Any], ColumnElement[bool]],
    python: Callable[[typing.Any, typing.Any], typing.Any],
    *,
    arity: Arity = Arity.ONE,
    ordered_only: bool = False,
) -> Operator:
    """An operator that is FALSE for a missing value, whatever it compares with."""

    def build(column: Column, value: Operand) -> ColumnElement[bool]:
        return and_(column.is_not(None), sql(column, value))

    def test(actual: object, value: Operand) -> bool:
        return actual is not None and bool(python(actual, value))

    return Operator(name=name, arity=arity, ordered_only=ordered_only, sql=build, python=test)


def _table(*operators: Operator) -> Mapping[str, Operator]:
    return MappingProxyType({op.name: op for op in operators})


OPERATORS: Mapping[str, Operator] = _table(
    _comparison("=", operator.eq, operator.eq),
    _comparison("!=", operator.ne, operator.ne),
    _comparison("<", operator.lt, operator.lt, ordered_only=True),
    _comparison("<=", operator.le, operator.le, ordered_only=True),
    _comparison(">", operator.gt, operator.gt, ordered_only=True),
    _comparison(">=", operator.ge, operator.ge, ordered_only=True),
    _comparison("in", lambda c, v: c.in_(v), lambda a, v: a in v, arity=Arity.LIST),
    _comparison("not in", lambda c, v: c.not_in(v), lambda a, v: a not in v, arity=Arity.LIST),
    Operator(
        name="is null",
        arity=Arity.NONE,
        ordered_only=False,
        sql=lambda c, _: c.is_(None),
        python=lambda a, _: a is None,
    ),
    Operator(
        name="is not null",
        arity=Arity.NONE,
        ordered_only=False,
        sql=lambda c, _: c.is_not(None),
        python=lambda a, _: a is not None,
    ),
)
"""Every operator a rule may use, by the name written in rules."""
