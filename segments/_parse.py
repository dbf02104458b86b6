"""Parsing: a YAML/JSON-decoded value in, a checked :data:`Rule` tree or a :class:`RuleError` out.

The grammar::

    node      := {all: [node, ...]} | {any: [node, ...]} | {not: node} | leaf
    leaf      := condition | predicate
    condition := {field: <name>, op: <operator>, value: <value>}   # no value for is (not) null
    predicate := {points_expiring: {within: <duration>}, op: <operator>, value: <integer>}
               | {next_expiry: {op: <operator>, value: <value>}}
               | {reachable: <channel>}
               | {consented: <channel>, for: <category>}            # for: optional
               | {received: <campaign>, within_last: <duration>}    # within_last: optional

Every error names the path of the offending part (``segment.all[2].op``).
Limits keep a hostile or runaway rule from costing much: :data:`MAX_DEPTH`,
:data:`MAX_NODES` and :data:`MAX_LIST_VALUES`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._errors import RuleError
from ._fields import ATTRIBUTE_PREFIX, FIELDS, check_attributes
from ._operators import OPERATORS, Arity, Operator
from ._predicates import CHANNELS, PURPOSES
from ._rules import (
    All,
    Any,
    Attribute,
    Condition,
    Consented,
    Not,
    PointsExpiring,
    Reachable,
    Received,
    Rule,
)
from ._types import FieldType, Operand, check_duration, check_value, describe

__all__ = ["CAMPAIGN_NAME", "MAX_DEPTH", "MAX_LIST_VALUES", "MAX_NODES", "parse_rule"]

MAX_DEPTH = 12
"""The deepest a rule may nest; the top node is level 1."""
MAX_NODES = 500
"""The most nodes (groups, conditions and predicates together) a rule may have."""
MAX_LIST_VALUES = 1000
"""The most values an ``in`` or ``not in`` list may hold."""
CAMPAIGN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
"""What a campaign name looks like (the same slug campaign files use)."""

_GROUPS = ("all", "any", "not")
#: Each predicate's own key and the other keys it takes (the optional ones last).
_PREDICATES: Mapping[str, tuple[str, ...]] = {
    "points_expiring": ("op", "value"),
    "next_expiry": (),
    "reachable": (),
    "consented": ("for",),
    "received": ("within_last",),
}
_CONDITION_KEYS = ("field", "op", "value")
_NODE_SHAPE = "all, any, not, field/op/value or a predicate"
_PREDICATE_NAMES = ", ".join(_PREDICATES)


def parse_rule(
    data: object, path: str = "segment", *, attributes: Mapping[str, str] | None = None
) -> Rule:
    """Check a decoded rule and build its frozen tree.

    Args:
        data: the rule as decoded from YAML or JSON (dicts, lists, strings, numbers).
        path: where the rule sits in its document; errors start with it.
        attributes: the program's declared attributes, ``{key: type}`` with type
            ``text``, ``integer``, ``number``, ``boolean``, ``instant`` or
            ``text_list``; only these may be named as ``attributes.<key>``.

    Returns:
        The rule tree, its values converted (instants to aware UTC datetimes,
        durations to timedeltas).

    Raises:
        RuleError: the rule is malformed; the error names the path and the problem.
    """
    return _Parser(check_attributes(attributes)).node(data, path, depth=1)


def _name(value: object, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise RuleError(path, f"expected {what}, got {describe(value)}")
    return value


class _Parser:
    """One parse: counts nodes across the whole tree."""

    def __init__(self, attributes: Mapping[str, FieldType]) -> None:
        self.attributes = attributes
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
            return self.leaf(data, path)
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

    def leaf(self, data: Mapping[object, object], path: str) -> Rule:
        if not data:
            raise RuleError(path, f"empty node; expected {_NODE_SHAPE}")
        kinds = [key for key in _PREDICATES if key in data]
        if len(kinds) > 1:
            raise RuleError(path, f"a node holds one predicate; got {' and '.join(kinds)}")
        if not kinds:
            return self.condition(data, path)
        kind = kinds[0]
        for key in data:
            if key != kind and key not in _PREDICATES[kind]:
                takes = ", ".join(_PREDICATES[kind]) or "nothing else"
                raise RuleError(
                    path, f'unexpected key {describe(key)} next to "{kind}" (it takes {takes})'
                )
        value, value_path = data[kind], f"{path}.{kind}"
        if kind == "reachable":
            return Reachable(channel=self.channel(value, value_path))
        if kind == "consented":
            purpose = data.get("for", "marketing")
            if purpose not in PURPOSES:
                raise RuleError(
                    f"{path}.for",
                    f"unknown category {describe(purpose)}; expected {', '.join(PURPOSES)}",
                )
            return Consented(channel=self.channel(value, value_path), purpose=str(purpose))
        if kind == "received":
            name = _name(value, value_path, "a campaign name")
            if not CAMPAIGN_NAME.fullmatch(name):
                raise RuleError(value_path, f"{describe(name)} is not a campaign name")
            window = data.get("within_last")
            within = None if window is None else check_duration(window, f"{path}.within_last")
            return Received(campaign=name, within_last=within)
        if kind == "next_expiry":
            spec = FIELDS["next_expiry"]
            op, operand = self.comparison(value, value_path, "next_expiry", spec.type, strict=True)
            return Condition(field="next_expiry", op=op, value=operand)
        return self.points_expiring(data, value, value_path, path)

    def points_expiring(
        self, data: Mapping[object, object], window: object, window_path: str, path: str
    ) -> PointsExpiring:
        if not isinstance(window, Mapping) or set(window) != {"within"}:
            raise RuleError(
                window_path, f"expected a mapping like {{within: 30d}}, got {describe(window)}"
            )
        within = check_duration(window["within"], f"{window_path}.within")
        op, operand = self.comparison(data, path, "points_expiring", FieldType.INTEGER)
        if OPERATORS[op].arity is Arity.NONE:
            raise RuleError(
                f"{path}.op",
                f'operator "{op}" does not apply to points_expiring (it is 0, never missing)',
            )
        return PointsExpiring(within=within, op=op, value=operand)

    def condition(self, data: Mapping[object, object], path: str) -> Rule:
        for key in data:
            if key not in _CONDITION_KEYS:
                raise RuleError(
                    path,
                    f"unknown key {describe(key)}; expected {_NODE_SHAPE} ({_PREDICATE_NAMES})",
                )
        if "field" not in data:
            raise RuleError(path, 'missing key "field"')
        field_path = f"{path}.field"
        name = _name(data["field"], field_path, "a field name")
        if name.startswith(ATTRIBUTE_PREFIX):
            key = name[len(ATTRIBUTE_PREFIX) :]
            declared = self.attributes.get(key)
            if declared is None:
                raise RuleError(field_path, f"undeclared attribute {describe(key)}")
            op, operand = self.comparison(data, path, name, declared)
            return Attribute(key=key, type=declared, op=op, value=operand)
        spec = FIELDS.get(name)
        if spec is None:
            raise RuleError(field_path, f"unknown field {describe(name)}")
        op, operand = self.comparison(data, path, name, spec.type)
        return Condition(field=name, op=op, value=operand)

    def comparison(
        self, data: object, path: str, name: str, field_type: FieldType, *, strict: bool = False
    ) -> tuple[str, Operand]:
        """The ``op`` and ``value`` of a mapping; ``strict``: it holds nothing else."""
        if not isinstance(data, Mapping):
            raise RuleError(path, f"expected a mapping with op and value, got {describe(data)}")
        if strict:
            for key in data:
                if key not in ("op", "value"):
                    raise RuleError(path, f"unknown key {describe(key)}; expected op and value")
        op = self.operator(data, path, name, field_type)
        return op.name, self.operand(data, path, field_type, op)

    @staticmethod
    def channel(value: object, path: str) -> str:
        name = _name(value, path, "a channel")
        if name not in CHANNELS:
            raise RuleError(
                path, f"unknown channel {describe(name)}; expected {', '.join(CHANNELS)}"
            )
        return name

    @staticmethod
    def operator(
        data: Mapping[object, object], path: str, name: str, field_type: FieldType
    ) -> Operator:
        if "op" not in data:
            raise RuleError(path, 'missing key "op"')
        op_path = f"{path}.op"
        op = OPERATORS.get(_name(data["op"], op_path, "an operator"))
        if op is None:
            raise RuleError(op_path, f"unknown operator {describe(data['op'])}")
        if not op.applies_to(field_type):
            raise RuleError(
                op_path,
                f'operator "{op.name}" does not apply to {field_type.value} field "{name}"',
            )
        return op

    @staticmethod
    def operand(
        data: Mapping[object, object], path: str, field_type: FieldType, op: Operator
    ) -> Operand:
        if op.arity is Arity.NONE:
            if "value" in data:
                raise RuleError(f"{path}.value", f'operator "{op.name}" takes no value')
            return None
        if "value" not in data:
            raise RuleError(path, f'missing key "value" (operator "{op.name}" needs one)')
        value, value_path = data["value"], f"{path}.value"
        if op.arity is Arity.ONE:
            return check_value(field_type, value, value_path)
        if op.arity is Arity.DURATION:
            return check_duration(value, value_path)
        if op.arity is Arity.PAIR:
            if not isinstance(value, list) or len(value) != 2:
                raise RuleError(
                    value_path, f'operator "{op.name}" needs [low, high], got {describe(value)}'
                )
            low, high = (
                check_value(field_type, item, f"{value_path}[{i}]") for i, item in enumerate(value)
            )
            if low > high:  # type: ignore[operator]  # both are of the field's ordered type
                raise RuleError(
                    value_path, f"low {describe(value[0])} is above high {describe(value[1])}"
                )
            return (low, high)
        if not isinstance(value, list) or not value:
            raise RuleError(
                value_path,
                f'operator "{op.name}" needs a non-empty list, got {describe(value)}',
            )
        if len(value) > MAX_LIST_VALUES:
            raise RuleError(value_path, f"more than {MAX_LIST_VALUES} values")
        return tuple(
            check_value(field_type, item, f"{value_path}[{i}]") for i, item in enumerate(value)
        )
