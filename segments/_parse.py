"""Parsing: a YAML/JSON-decoded value in, a checked :data:`Rule` tree or a :class:`RuleError` out.

The grammar::

    node      := {all: [node, ...]} | {any: [node, ...]} | {not: node} | condition
    condition := {field: <name>, op: <operator>, value: <value>}   # no value for is (not) null

Every error names the path of the offending part (``segment.all[2].op``).
Limits keep a hostile or runaway rule from costing much: :data:`MAX_DEPTH`,
:data:`MAX_NODES` and :data:`MAX_LIST_VALUES`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import RuleError
from ._fields import FIELDS, FieldSpec, check_value, describe
from ._operators import OPERATORS, Arity, Operator
from ._rules import All, Any, Condition, Not, Operand, Rule

__all__ = ["MAX_DEPTH", "MAX_LIST_VALUES", "MAX_NODES", "parse_rule"]

MAX_DEPTH = 12
"""The deepest a rule may nest; the top node is level 1."""
MAX_NODES = 500
"""The most nodes (all, any, not and conditions together) a rule may have."""
MAX_LIST_VALUES = 1000
"""The most values an ``in`` or ``not in`` list may hold."""

_GROUPS = ("all", "any", "not")
_CONDITION_KEYS = ("field", "op", "value")
_NODE_SHAPE = "all, any, not or field/op/value"


def parse_rule(data: object, path: str = "segment") -> Rule:
    """Check a decoded rule and build its frozen tree.

    Args:
        data: the rule as decoded from YAML or JSON (dicts, lists, strings, numbers).
        path: where the rule sits in its document; errors start with it.

    Returns:
        The rule tree, its values converted (instants to aware UTC datetimes).

    Raises:
        RuleError: the rule is malformed; the error names the path and the problem.
    """
    return _Parser().node(data, path, depth=1)


class _Parser:
    """One parse: counts nodes across the whole tree."""

    def __init__(self) -> None:
        self.nodes = 0

    def node(self, data: object, path: str, depth: int) -> Rule:
        if depth > MAX_DEPTH:
            raise RuleError(path, f"nested more than {MAX_DEPTH} levels deep")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RuleError(path, f"the rule has more than {MAX_NODES} nodes")
        if not isinstance(data, Mapping):
            raise RuleError(path, f"expected a mapping with {_NODE_SHAPE}, got {describe(data)}")
        groups = [key for key in _GROUPS if key in data]
        if len(groups) > 1:
            raise RuleError(path, f"a node holds one of all, any, not; got {' and '.join(groups)}")
        if not groups:
            return self.condition(data, path)
        group = groups[0]
        for key in data:
            if key != group:
                raise RuleError(path, f'unexpected key {describe(key)} next to "{group}"')
        inner, inner_path = data[group], f"{path}.{group}"
        if group == "not":
            return Not(rule=self.node(inner, inner_path, depth + 1))
        if not isinstance(inner, list) or not inner:
            raise RuleError(inner_path, "must be a non-empty list")
        rules = tuple(
            self.node(item, f"{inner_path}[{i}]", depth + 1) for i, item in enumerate(inner)
        )
        return All(rules=rules) if group == "all" else Any(rules=rules)

    def condition(self, data: Mapping[object, object], path: str) -> Condition:
        if not data:
            raise RuleError(path, f"empty node; expected {_NODE_SHAPE}")
        for key in data:
            if key not in _CONDITION_KEYS:
                raise RuleError(path, f"unknown key {describe(key)}; expected {_NODE_SHAPE}")
        spec = self.field(data, path)
        op = self.operator(data, path, spec)
        value = self.operand(data, path, spec, op)
        return Condition(field=spec.name, op=op.name, value=value)

    @staticmethod
    def field(data: Mapping[object, object], path: str) -> FieldSpec:
        if "field" not in data:
            raise RuleError(path, 'missing key "field"')
        name = data["field"]
        if not isinstance(name, str):
            raise RuleError(f"{path}.field", f"expected a field name, got {describe(name)}")
        spec = FIELDS.get(name)
        if spec is None:
            raise RuleError(f"{path}.field", f"unknown field {describe(name)}")
        return spec

    @staticmethod
    def operator(data: Mapping[object, object], path: str, spec: FieldSpec) -> Operator:
        if "op" not in data:
            raise RuleError(path, 'missing key "op"')
        name = data["op"]
        if not isinstance(name, str):
            raise RuleError(f"{path}.op", f"expected an operator, got {describe(name)}")
        op = OPERATORS.get(name)
        if op is None:
            raise RuleError(f"{path}.op", f"unknown operator {describe(name)}")
        if op.ordered_only and not spec.type.ordered:
            raise RuleError(
                f"{path}.op",
                f'operator "{op.name}" does not apply to {spec.type.value} field "{spec.name}"',
            )
        return op

    @staticmethod
    def operand(data: Mapping[object, object], path: str, spec: FieldSpec, op: Operator) -> Operand:
        if op.arity is Arity.NONE:
            if "value" in data:
                raise RuleError(f"{path}.value", f'operator "{op.name}" takes no value')
            return None
        if "value" not in data:
            raise RuleError(path, f'missing key "value" (operator "{op.name}" needs one)')
        value, value_path = data["value"], f"{path}.value"
        if op.arity is Arity.ONE:
            return check_value(spec.type, value, value_path)
        if not isinstance(value, list) or not value:
            raise RuleError(
                value_path,
                f'operator "{op.name}" needs a non-empty list, got {describe(value)}',
            )
        if len(value) > MAX_LIST_VALUES:
            raise RuleError(value_path, f"more than {MAX_LIST_VALUES} values")
        return tuple(
            check_value(spec.type, item, f"{value_path}[{i}]") for i, item in enumerate(value)
        )
