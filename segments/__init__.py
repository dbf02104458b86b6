"""Segments: the audience rule language and its compilation to SQL.

A marketer writes a rule in YAML or JSON::

    all:
      - {field: tier, op: in, value: [gold, platinum]}
      - {field: points_balance, op: ">=", value: 500}
      - not: {field: address_country, op: "=", value: US}

:func:`parse_rule` checks it (fields are a whitelist, :data:`FIELDS`; operators
are a table, :data:`OPERATORS`; values are type-checked) and returns a frozen
:data:`Rule` tree, or raises :class:`RuleError` naming the path of the problem
(``segment.all[2].op: unknown operator "=>"``). :func:`compile_rule` turns the
tree into a SQLAlchemy expression over :class:`store.models.Member`;
:func:`evaluate_rule` decides the same thing in plain Python.

The NULL rule: a condition on a missing (NULL) value is FALSE, never NULL, so
``not`` inverts it cleanly. ``{field: tier, op: "!=", value: gold}`` does not
match a member with no tier; ``not: {field: tier, op: "=", value: gold}``
does. Only ``is null`` matches a missing value. Every compiled leaf is
guarded so that SQL's three-valued logic never leaks out, and
:func:`evaluate_rule` keeps exactly the same semantics.

Text fields take ``=``, ``!=``, ``in``, ``not in`` and the null tests; the
ordering operators apply to integers and instants only, because PostgreSQL
orders text by the database's collation. Instants are written in ISO-8601 with
an offset or ``Z`` and compared as UTC.

Deleted members are not a rule's business: :func:`audience_filter` adds
``deleted_at IS NULL`` to a compiled rule. This package opens no session.
"""

from ._compile import audience_filter, compile_rule, evaluate_rule
from ._errors import RuleError
from ._fields import FIELDS, FieldSpec, FieldType
from ._operators import OPERATORS, Arity, Operator
from ._parse import MAX_DEPTH, MAX_LIST_VALUES, MAX_NODES, parse_rule
from ._rules import All, Any, Condition, Not, Rule

__all__ = [
    "FIELDS",
    "MAX_DEPTH",
    "MAX_LIST_VALUES",
    "MAX_NODES",
    "OPERATORS",
    "All",
    "Any",
    "Arity",
    "Condition",
    "FieldSpec",
    "FieldType",
    "Not",
    "Operator",
    "Rule",
    "RuleError",
    "audience_filter",
    "compile_rule",
    "evaluate_rule",
    "parse_rule",
]
