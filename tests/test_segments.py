"""The rule language without a database: its surface, the Python reference, bound values.

Parsing is tested in ``test_segments_parse.py``, SQL on real engines in
``test_segments_sql.py``.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

import segments
from segments import (
    FIELDS,
    OPERATORS,
    All,
    Condition,
    FieldType,
    RuleError,
    compile_rule,
    evaluate_rule,
    parse_rule,
)
from segments import Any as AnyOf


def leaf(field: str, op: str, value: Any = None) -> dict[str, Any]:
    """A condition as written in a rule file (no ``value`` key for the null tests)."""
    data: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        data["value"] = value
    return data


def test_public_surface_is_declared() -> None:
    """The package's ``__all__`` is exactly its public API, and every name resolves."""
    # Given the package
    # When its declared surface is read
    exported = set(segments.__all__)
    # Then it is the documented API
    assert {
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
    } == exported
    assert all(hasattr(segments, name) for name in exported)


def test_whitelist_names_member_columns_with_their_types() -> None:
    """The whitelist holds exactly the agreed member columns, each typed like its column."""
    # Given the field whitelist
    # When its names and types are read
    types = {name: spec.type for name, spec in FIELDS.items()}
    # Then they are the agreed fields, typed as the model's columns are
    text = FieldType.TEXT
    assert {
        "external_id": text,
        "name": text,
        "email": text,
        "phone": text,
        "locale": text,
        "time_zone": text,
        "tier": text,
        "points_balance": FieldType.INTEGER,
        "enrolled_at": FieldType.INSTANT,
        "purchases_count": FieldType.INTEGER,
        "last_purchase_at": FieldType.INSTANT,
        "address_country": text,
        "address_state": text,
        "address_city": text,
    } == types
    assert all(spec.column.key == name for name, spec in FIELDS.items())
    assert {str, int, datetime} == {spec.type.python_type for spec in FIELDS.values()}


def test_rule_error_is_a_value_error_that_survives_pickling() -> None:
    """RuleError subclasses ValueError and keeps path and problem across processes."""
    # Given a RuleError
    error = RuleError("segment.all[0].op", 'unknown operator "=>"')
    # When it is pickled and unpickled
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    # Then it is the same error
    assert isinstance(copy, ValueError)
    assert (copy.path, copy.problem) == ("segment.all[0].op", 'unknown operator "=>"')
    assert str(error) == str(copy)


NO_TIER: dict[str, Any] = {"tier": None, "points_balance": 0}
GOLD_MEMBER: dict[str, Any] = {"tier": "gold", "points_balance": 600}
SILVER_MEMBER: dict[str, Any] = {"tier": "silver", "points_balance": 100}


@pytest.mark.parametrize(
    ("data", "matches"),
    [
        (leaf("tier", "=", "gold"), (False, True, False)),
        (leaf("tier", "!=", "gold"), (False, False, True)),
        ({"not": leaf("tier", "=", "gold")}, (True, False, True)),
        ({"not": leaf("tier", "!=", "gold")}, (True, True, False)),
        (leaf("tier", "in", ["gold", "platinum"]), (False, True, False)),
        (leaf("tier", "not in", ["gold", "platinum"]), (False, False, True)),
        ({"not": leaf("tier", "in", ["gold", "platinum"])}, (True, False, True)),
        (leaf("tier", "is null"), (True, False, False)),
        (leaf("tier", "is not null"), (False, True, True)),
        ({"not": {"not": leaf("tier", "=", "gold")}}, (False, True, False)),
        ({"any": [leaf("tier", "!=", "gold"), leaf("tier", "=", "gold")]}, (False, True, True)),
    ],
    ids=[
        "equal",
        "not-equal-skips-missing",
        "not-of-equal-takes-missing",
        "not-of-not-equal",
        "in",
        "not-in-skips-missing",
        "not-of-in-takes-missing",
        "is-null",
        "is-not-null",
        "double-not",
        "either-way-still-skips-missing",
    ],
)
def test_reference_evaluation_follows_the_null_rule(
    data: dict[str, Any], matches: tuple[bool, bool, bool]
) -> None:
    """A condition on a missing value is false, so ``not`` of it is true."""
    # Given a rule and members with no tier, gold and silver
    rule = parse_rule(data)
    # When each is evaluated in Python
    actual = tuple(evaluate_rule(rule, m) for m in (NO_TIER, GOLD_MEMBER, SILVER_MEMBER))
    # Then the NULL rule decides the member with no tier
    assert matches == actual


def test_reference_evaluation_treats_an_absent_key_as_missing() -> None:
    """A member mapping without the field is the same as one holding None."""
    # Given a member mapping without ``tier``
    member = {"points_balance": 5}
    # When conditions on tier are evaluated
    # Then it behaves as a member with no tier
    assert evaluate_rule(parse_rule(leaf("tier", "is null")), member)
    assert not evaluate_rule(parse_rule(leaf("tier", "!=", "gold")), member)


def test_empty_groups_built_by_hand_are_neutral() -> None:
    """An empty All matches everyone and an empty Any no one, in SQL and in Python."""
    # Given empty groups (the parser refuses them, code may build them)
    # When they are evaluated and compiled
    # Then All is true and Any is false
    assert evaluate_rule(All(rules=()), {})
    assert not evaluate_rule(AnyOf(rules=()), {})
    assert str(compile_rule(All(rules=())).compile(dialect=postgresql.dialect())) == "true"
    assert str(compile_rule(AnyOf(rules=())).compile(dialect=postgresql.dialect())) == "false"


def test_hand_built_condition_with_unknown_names_is_refused() -> None:
    """A Condition built in code with an unknown field or operator raises RuleError."""
    # Given conditions that the parser would have refused
    bad_field = Condition(field="password", op="=", value="x")
    bad_op = Condition(field="tier", op="~", value="x")
    # When they are compiled or evaluated
    # Then RuleError names the problem
    with pytest.raises(RuleError, match='unknown field "password"'):
        compile_rule(bad_field)
    with pytest.raises(RuleError, match='unknown operator "~"'):
        evaluate_rule(bad_op, {})


INJECTION = "x' OR 1=1 --"
SOME_INSTANT = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    "dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"]
)
@pytest.mark.parametrize(
    ("data", "bound"),
    [
        (leaf("name", "=", INJECTION), INJECTION),
        (leaf("name", "in", ["ok", INJECTION]), INJECTION),
        ({"not": leaf("email", "not in", [INJECTION])}, INJECTION),
        (leaf("points_balance", ">=", 987654), 987654),
        (leaf("enrolled_at", "<", "2031-02-03T04:05:06Z"), SOME_INSTANT),
    ],
    ids=["equal", "in", "not-in", "integer", "instant"],
)
def test_values_are_bound_parameters(data: dict[str, Any], bound: object, dialect: Any) -> None:
    """No value of a rule is written into the SQL text; each travels as a parameter."""
    # Given a rule holding a hostile or recognisable value
    rule = parse_rule(data)
    # When it is compiled for a real dialect
    compiled = compile_rule(rule).compile(dialect=dialect)
    sql = str(compiled)
    # Then the SQL text does not hold the value, and the parameters do
    for shown in (INJECTION, "OR 1=1", "987654", "2031"):
        assert shown not in sql
    params = [v for p in compiled.params.values() for v in (p if isinstance(p, list) else [p])]
    assert bound in params


def test_every_operator_is_reachable_from_the_language() -> None:
    """Each operator in the table parses on a field it applies to."""
    # Given every operator and an integer field (all operators apply to integers)
    for name, op in OPERATORS.items():
        data = leaf("points_balance", name, {"none": None, "one": 1, "list": [1]}[op.arity.value])
        # When a condition with it is parsed
        rule = parse_rule(data)
        # Then it names that operator
        assert isinstance(rule, Condition)
        assert name == rule.op
