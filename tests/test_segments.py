"""The rule language without a database: its surface, the Python reference, bound values.

Parsing is tested in ``test_segments_parse.py``, SQL on real engines in
``test_segments_sql.py``.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

import segments
from segments import (
    FIELDS,
    OPERATORS,
    All,
    Arity,
    Attribute,
    Condition,
    FieldType,
    RuleError,
    compile_rule,
    evaluate_rule,
    parse_rule,
)
from segments import Any as AnyOf
from store.models import Member


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
        "DEFAULT_BATCH",
        "FIELDS",
        "MAX_DEPTH",
        "MAX_LIST_VALUES",
        "MAX_NODES",
        "OPERATORS",
        "All",
        "Any",
        "Arity",
        "Attribute",
        "Condition",
        "Consented",
        "DueReminder",
        "ExpiringPoints",
        "FieldSpec",
        "FieldType",
        "Frame",
        "Not",
        "Operator",
        "PointsExpiring",
        "Preview",
        "Reachable",
        "Received",
        "Rule",
        "RuleError",
        "SnapshotDiff",
        "audience_filter",
        "compile_rule",
        "due_reminders",
        "evaluate_rule",
        "expiry_candidates",
        "iter_expiring",
        "load_segment",
        "parse_rule",
        "preview",
        "save_segment",
        "snapshot",
    } == exported
    assert all(hasattr(segments, name) for name in exported)


def test_whitelist_names_member_columns_with_their_types() -> None:
    """The whitelist holds each member column but ``attributes``, typed alike, and next_expiry."""
    # Given the field whitelist
    # When its names and types are read
    types = {name: spec.type for name, spec in FIELDS.items()}
    # Then they are the agreed fields, typed as the model's columns are
    text, instant = FieldType.TEXT, FieldType.INSTANT
    assert {
        "id": FieldType.INTEGER,
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
        "address_line1": text,
        "address_line2": text,
        "address_city": text,
        "address_state": text,
        "address_zip": text,
        "address_country": text,
        "created_at": instant,
        "updated_at": instant,
        "deleted_at": instant,
        "next_expiry": instant,
    } == types
    columns = {name for name, spec in FIELDS.items() if spec.column is not None}
    assert {c.key for c in Member.__table__.columns} - {"attributes"} == columns
    assert all(spec.column.key == name for name, spec in FIELDS.items() if spec.column is not None)
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
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
SECRET_ATTRIBUTES = {
    "secretkey": "text",
    "secretlist": "text_list",
    "secretcount": "integer",
    "secretwhen": "instant",
}


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
        (leaf("name", "starts_with", INJECTION), INJECTION),
        (leaf("points_balance", "between", [987654, 987655]), 987654),
        (leaf("attributes.secretkey", "=", INJECTION), INJECTION),
        (leaf("attributes.secretkey", "starts_with", INJECTION), INJECTION),
        (leaf("attributes.secretlist", "contains", INJECTION), INJECTION),
        (leaf("attributes.secretcount", ">", 987654), 987654),
        (leaf("attributes.secretwhen", "<", "2031-02-03T04:05:06Z"), "2031-02-03T04:05:06.000000Z"),
        (leaf("enrolled_at", "within_last", "2w"), NOW - timedelta(weeks=2)),
        ({"received": "zzcampaignzz", "within_last": "30d"}, "zzcampaignzz"),
        ({"points_expiring": {"within": "30d"}, "op": ">=", "value": 987654}, 987654),
        ({"consented": "direct_mail", "for": "service"}, "direct_mail"),
    ],
    ids=[
        "equal",
        "in",
        "not-in",
        "integer",
        "instant",
        "starts-with",
        "between",
        "attribute-text",
        "attribute-starts-with",
        "attribute-contains",
        "attribute-integer",
        "attribute-instant",
        "within-last",
        "received",
        "points-expiring",
        "consented",
    ],
)
def test_values_are_bound_parameters(data: dict[str, Any], bound: object, dialect: Any) -> None:
    """No value of a rule, nor an attribute key, is written into the SQL text: all are bound."""
    # Given a rule holding a hostile or recognisable value
    rule = parse_rule(data, attributes=SECRET_ATTRIBUTES)
    # When it is compiled for a real dialect
    compiled = compile_rule(rule, now=NOW).compile(dialect=dialect)
    sql = str(compiled)
    # Then the SQL text does not hold the value, and the parameters do
    for shown in (INJECTION, "OR 1=1", "987654", "2031", "secret", "zzcampaignzz", "direct_mail"):
        assert shown not in sql
    params = [v for p in compiled.params.values() for v in (p if isinstance(p, list) else [p])]
    assert bound in params


ONE_VALUE = {
    FieldType.TEXT: "a",
    FieldType.INTEGER: 1,
    FieldType.NUMBER: 1.5,
    FieldType.BOOLEAN: True,
    FieldType.INSTANT: "2026-01-01T00:00:00Z",
    FieldType.TEXT_LIST: "a",
}


@pytest.mark.parametrize("field_type", list(FieldType), ids=[t.value for t in FieldType])
def test_every_operator_parses_on_every_attribute_type_it_applies_to(field_type: FieldType) -> None:
    """Each operator parses on an attribute of each type it applies to, and is refused on others."""
    # Given an attribute declared with the type
    declared = {"x": field_type.value}
    for name, op in OPERATORS.items():
        value = {
            Arity.NONE: None,
            Arity.ONE: ONE_VALUE[field_type],
            Arity.LIST: [ONE_VALUE[field_type]],
            Arity.PAIR: [ONE_VALUE[field_type]] * 2,
            Arity.DURATION: "1d",
        }[op.arity]
        data = leaf("attributes.x", name, value)
        # When a condition with the operator is parsed
        if not op.applies_to(field_type):
            # Then an operator that does not apply is refused at the op
            with pytest.raises(RuleError, match=r"^segment\.op: operator"):
                parse_rule(data, attributes=declared)
            continue
        rule = parse_rule(data, attributes=declared)
        # Then it names the operator, and compiles and evaluates on a member without the key
        assert isinstance(rule, Attribute)
        assert (name, field_type) == (rule.op, rule.type)
        compile_rule(rule, now=NOW)
        assert evaluate_rule(rule, {}, now=NOW) is (name == "is null")
