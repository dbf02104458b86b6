"""Parsing rules: the tree it builds, the exact errors it raises, its limits, and fuzzing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from segments import (
    FIELDS,
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_NODES,
    OPERATORS,
    All,
    Attribute,
    Condition,
    Consented,
    FieldType,
    Not,
    PointsExpiring,
    Reachable,
    Received,
    RuleError,
    compile_rule,
    evaluate_rule,
    parse_rule,
)
from segments import Any as AnyOf

GOLD = {"field": "tier", "op": "=", "value": "gold"}
PREDICATES = " (points_expiring, next_expiry, reachable, consented, received)"
DECLARED = {"shoe": "integer", "vip": "boolean", "score": "number", "tags": "text_list"}
DURATION_HINT = 'expected a duration like "30d", "12h" or "2w"'


def leaf(field: object, op: str, value: Any = None) -> dict[str, Any]:
    """A condition as written in a rule file (no ``value`` key for the null tests)."""
    data: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        data["value"] = value
    return data


def nested_nots(levels: int) -> dict[str, Any]:
    """``levels`` ``not`` nodes around one condition."""
    data: dict[str, Any] = GOLD
    for _ in range(levels):
        data = {"not": data}
    return data


def test_parse_builds_the_frozen_tree_of_the_design_example() -> None:
    """A valid rule becomes a tree of frozen values; lists become tuples, instants UTC."""
    # Given the broadcast example of DESIGN.md with a nested any and not
    data = yaml.safe_load(
        """
        all:
          - {field: tier, op: in, value: [gold, platinum]}
          - {field: points_balance, op: ">=", value: 500}
          - any:
              - {field: enrolled_at, op: "<", value: "2025-01-01T01:00:00+01:00"}
              - {field: last_purchase_at, op: is null}
          - not: {field: tier, op: "=", value: basic}
        """
    )
    # When it is parsed
    rule = parse_rule(data)
    # Then the tree holds checked, converted values
    new_year = datetime(2025, 1, 1, tzinfo=UTC)
    assert (
        All(
            rules=(
                Condition(field="tier", op="in", value=("gold", "platinum")),
                Condition(field="points_balance", op=">=", value=500),
                AnyOf(
                    rules=(
                        Condition(field="enrolled_at", op="<", value=new_year),
                        Condition(field="last_purchase_at", op="is null"),
                    )
                ),
                Not(rule=Condition(field="tier", op="=", value="basic")),
            )
        )
        == rule
    )
    with pytest.raises(AttributeError):
        rule.rules = ()  # type: ignore[misc, union-attr]  # proving it is frozen


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T10:00:00.5-05:00", datetime(2026, 12, 1, 15, 0, 0, 500000, tzinfo=UTC)),
        (
            datetime(
                2026, 12, 1, 11, tzinfo=datetime.fromisoformat("2026-01-01T00:00+01:00").tzinfo
            ),
            datetime(2026, 12, 1, 10, tzinfo=UTC),
        ),
    ],
    ids=["zulu", "negative-offset-fraction", "yaml-aware-datetime"],
)
def test_instants_are_converted_to_aware_utc(value: object, expected: datetime) -> None:
    """ISO-8601 text with an offset, or an aware datetime from YAML, becomes aware UTC."""
    # Given a condition on an instant field
    data = leaf("enrolled_at", ">=", value)
    # When it is parsed
    rule = parse_rule(data)
    # Then the value is the same instant in UTC
    assert isinstance(rule, Condition)
    assert expected == rule.value
    assert isinstance(rule.value, datetime)
    assert rule.value.tzinfo == UTC


PARSE_ERRORS: list[tuple[str, object, str]] = [
    (
        "unknown-operator",
        {"all": [GOLD, GOLD, leaf("tier", "=>", "gold")]},
        'segment.all[2].op: unknown operator "=>"',
    ),
    (
        "unknown-field",
        {"all": [leaf("tierr", "=", "gold")]},
        'segment.all[0].field: unknown field "tierr"',
    ),
    ("empty-any", {"any": []}, "segment.any: must be a non-empty list"),
    ("any-of-a-mapping", {"any": GOLD}, "segment.any: must be a non-empty list"),
    ("all-of-null", {"all": None}, "segment.all: must be a non-empty list"),
    (
        "text-for-integer",
        {"all": [GOLD, leaf("points_balance", ">=", "abc")]},
        'segment.all[1].value: expected an integer, got "abc"',
    ),
    (
        "bool-for-integer",
        leaf("points_balance", "=", True),
        "segment.value: expected an integer, got true",
    ),
    (
        "float-for-integer",
        leaf("purchases_count", ">", 1.5),
        "segment.value: expected an integer, got 1.5",
    ),
    (
        "integer-too-large",
        leaf("points_balance", ">", 2**31),
        "segment.value: expected an integer from -2147483648 to 2147483647, got 2147483648",
    ),
    ("integer-for-text", leaf("tier", "=", 5), "segment.value: expected text, got 5"),
    (
        "null-value",
        {"field": "tier", "op": "=", "value": None},
        'segment.value: expected text, got null (use op "is null" to match a missing value)',
    ),
    (
        "nul-in-text",
        leaf("name", "=", "a\x00b"),
        "segment.value: text must not contain NUL or unpaired surrogate characters",
    ),
    (
        "lone-surrogate-in-text",
        leaf("name", "=", "a\ud800"),
        "segment.value: text must not contain NUL or unpaired surrogate characters",
    ),
    (
        "unknown-key",
        {**GOLD, "valeu": 1},
        'segment: unknown key "valeu"; expected all, any, not, field/op/value or a predicate'
        + PREDICATES,
    ),
    (
        "non-text-key",
        {1: "x"},
        "segment: unknown key 1; expected all, any, not, field/op/value or a predicate"
        + PREDICATES,
    ),
    (
        "two-groups",
        {"all": [GOLD], "any": [GOLD]},
        "segment: a node holds one of all, any, not; got all and any",
    ),
    (
        "three-groups",
        {"not": GOLD, "any": [GOLD], "all": [GOLD]},
        "segment: a node holds one of all, any, not; got all and any and not",
    ),
    (
        "key-next-to-group",
        {"not": GOLD, "field": "tier"},
        'segment: unexpected key "field" next to "not"',
    ),
    (
        "list-as-node",
        ["tier"],
        "segment: expected a mapping with all, any, not, field/op/value or a predicate, got a list",
    ),
    (
        "null-as-node",
        None,
        "segment: expected a mapping with all, any, not, field/op/value or a predicate, got null",
    ),
    (
        "text-as-list-item",
        {"any": [GOLD, "tier = gold"]},
        "segment.any[1]: expected a mapping with all, any, not, field/op/value or a predicate, "
        'got "tier = gold"',
    ),
    (
        "empty-node",
        {},
        "segment: empty node; expected all, any, not, field/op/value or a predicate",
    ),
    ("missing-field", {"op": "=", "value": "gold"}, 'segment: missing key "field"'),
    ("missing-op", {"field": "tier", "value": "gold"}, 'segment: missing key "op"'),
    ("missing-value", leaf("tier", "="), 'segment: missing key "value" (operator "=" needs one)'),
    ("field-not-text", leaf(5, "=", "gold"), "segment.field: expected a field name, got 5"),
    (
        "op-not-text",
        {"field": "tier", "op": ["="], "value": "gold"},
        "segment.op: expected an operator, got a list",
    ),
    (
        "value-for-null-test",
        {"field": "tier", "op": "is null", "value": None},
        'segment.value: operator "is null" takes no value',
    ),
    (
        "ordering-on-text",
        leaf("tier", "<", "gold"),
        'segment.op: operator "<" does not apply to text field "tier"',
    ),
    (
        "in-without-list",
        leaf("tier", "in", "gold"),
        'segment.value: operator "in" needs a non-empty list, got "gold"',
    ),
    (
        "in-empty-list",
        leaf("tier", "not in", []),
        'segment.value: operator "not in" needs a non-empty list, got an empty list',
    ),
    (
        "in-mistyped-item",
        leaf("points_balance", "in", [1, "2"]),
        'segment.value[1]: expected an integer, got "2"',
    ),
    (
        "in-too-long",
        leaf("tier", "in", ["gold"] * (MAX_LIST_VALUES + 1)),
        "segment.value: more than 1000 values",
    ),
    (
        "instant-without-offset",
        leaf("enrolled_at", ">", "2025-01-01T10:00:00"),
        'segment.value: expected an ISO-8601 date-time with an offset or "Z", '
        'got "2025-01-01T10:00:00"',
    ),
    (
        "instant-as-words",
        leaf("enrolled_at", ">", "yesterday"),
        'segment.value: expected an ISO-8601 date-time with an offset or "Z", got "yesterday"',
    ),
    (
        "yaml-date",
        leaf("enrolled_at", ">", date(2025, 1, 1)),
        'segment.value: expected an ISO-8601 date-time with an offset or "Z", '
        "got the date 2025-01-01",
    ),
    (
        "yaml-naive-datetime",
        leaf("last_purchase_at", ">", datetime(2025, 1, 1, 10)),
        'segment.value: expected an ISO-8601 date-time with an offset or "Z", '
        "got the date-time 2025-01-01T10:00:00",
    ),
    (
        "instant-out-of-range",
        leaf("enrolled_at", ">", "0001-01-01T00:00:00+01:00"),
        'segment.value: "0001-01-01T00:00:00+01:00" is out of range in UTC',
    ),
    (
        "path-through-not",
        {"not": {"not": leaf("tierr", "=", "gold")}},
        'segment.not.not.field: unknown field "tierr"',
    ),
    (
        "long-text-is-cut",
        leaf("x" * 50, "=", "gold"),
        'segment.field: unknown field "' + "x" * 40 + '"…',
    ),
    (
        "too-deep",
        nested_nots(MAX_DEPTH),
        "segment" + ".not" * MAX_DEPTH + ": nested more than 12 levels deep",
    ),
    (
        "undeclared-attribute",
        {"all": [GOLD, leaf("attributes.shoe_size", "=", 1)]},
        'segment.all[1].field: undeclared attribute "shoe_size"',
    ),
    (
        "boolean-attribute-text-value",
        leaf("attributes.vip", "=", "yes"),
        'segment.value: expected true or false, got "yes"',
    ),
    (
        "number-attribute-nan",
        leaf("attributes.score", ">", float("nan")),
        "segment.value: expected a number from -1e15 to 1e15, got nan",
    ),
    (
        "ordering-on-boolean",
        leaf("attributes.vip", ">", True),
        'segment.op: operator ">" does not apply to boolean field "attributes.vip"',
    ),
    (
        "equality-on-text-list",
        leaf("attributes.tags", "=", "vip"),
        'segment.op: operator "=" does not apply to text_list field "attributes.tags"',
    ),
    (
        "contains-on-text",
        leaf("tier", "contains", "x"),
        'segment.op: operator "contains" does not apply to text field "tier"',
    ),
    (
        "contains-number",
        leaf("attributes.tags", "contains", 1),
        "segment.value: expected text, got 1",
    ),
    (
        "starts-with-on-integer",
        leaf("points_balance", "starts_with", "1"),
        'segment.op: operator "starts_with" does not apply to integer field "points_balance"',
    ),
    (
        "between-one-value",
        leaf("points_balance", "between", [1]),
        'segment.value: operator "between" needs [low, high], got a list',
    ),
    (
        "between-reversed",
        leaf("points_balance", "between", [500, 100]),
        "segment.value: low 500 is above high 100",
    ),
    (
        "between-mistyped",
        leaf("points_balance", "between", [1, "2"]),
        'segment.value[1]: expected an integer, got "2"',
    ),
    (
        "duration-in-words",
        leaf("enrolled_at", "within_last", "30 days"),
        f'segment.value: {DURATION_HINT}, got "30 days"',
    ),
    (
        "duration-in-months",
        leaf("enrolled_at", "older_than", "6m"),
        f'segment.value: {DURATION_HINT}, got "6m"',
    ),
    (
        "duration-too-long",
        leaf("enrolled_at", "within_next", "99999w"),
        'segment.value: "99999w" is longer than 100 years',
    ),
    (
        "relative-on-text",
        leaf("tier", "within_last", "30d"),
        'segment.op: operator "within_last" does not apply to text field "tier"',
    ),
    (
        "unknown-channel",
        {"any": [GOLD, {"reachable": "fax"}]},
        'segment.any[1].reachable: unknown channel "fax"; expected sms, email, push, direct_mail',
    ),
    (
        "channel-not-text",
        {"reachable": ["sms"]},
        "segment.reachable: expected a channel, got a list",
    ),
    (
        "unknown-consent-category",
        {"consented": "sms", "for": "promo"},
        'segment.for: unknown category "promo"; expected marketing, service, transactional',
    ),
    (
        "campaign-not-a-slug",
        {"not": {"received": "Winter Sale'; --"}},
        'segment.not.received: "Winter Sale\'; --" is not a campaign name',
    ),
    (
        "received-window-not-duration",
        {"received": "winter-sale", "within_last": 30},
        f"segment.within_last: {DURATION_HINT}, got 30",
    ),
    (
        "received-with-op",
        {"received": "winter-sale", "op": "="},
        'segment: unexpected key "op" next to "received" (it takes within_last)',
    ),
    (
        "reachable-with-for",
        {"reachable": "sms", "for": "service"},
        'segment: unexpected key "for" next to "reachable" (it takes nothing else)',
    ),
    (
        "two-predicates",
        {"reachable": "sms", "received": "winter-sale"},
        "segment: a node holds one predicate; got reachable and received",
    ),
    (
        "points-expiring-without-window",
        {"points_expiring": "30d", "op": ">=", "value": 1},
        'segment.points_expiring: expected a mapping like {within: 30d}, got "30d"',
    ),
    (
        "points-expiring-bad-window",
        {"points_expiring": {"within": "soon"}, "op": ">=", "value": 1},
        f'segment.points_expiring.within: {DURATION_HINT}, got "soon"',
    ),
    (
        "points-expiring-is-null",
        {"points_expiring": {"within": "30d"}, "op": "is null"},
        'segment.op: operator "is null" does not apply to points_expiring (it is 0, never missing)',
    ),
    (
        "points-expiring-missing-value",
        {"points_expiring": {"within": "30d"}, "op": ">="},
        'segment: missing key "value" (operator ">=" needs one)',
    ),
    (
        "next-expiry-extra-key",
        {"next_expiry": {"op": "within_next", "value": "14d", "field": "tier"}},
        'segment.next_expiry: unknown key "field"; expected op and value',
    ),
    (
        "next-expiry-unknown-op",
        {"all": [GOLD, GOLD, {"next_expiry": {"op": "=>", "value": "14d"}}]},
        'segment.all[2].next_expiry.op: unknown operator "=>"',
    ),
    (
        "next-expiry-not-mapping",
        {"next_expiry": "14d"},
        'segment.next_expiry: expected a mapping with op and value, got "14d"',
    ),
    (
        "too-many-nodes",
        {"any": [GOLD] * MAX_NODES},
        f"segment.any[{MAX_NODES - 1}]: the rule has more than 500 nodes",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [case[1:] for case in PARSE_ERRORS], ids=[case[0] for case in PARSE_ERRORS]
)
def test_parse_errors_name_the_path_and_the_problem(data: object, message: str) -> None:
    """Each malformed rule is refused with a RuleError naming where and what."""
    # Given a malformed rule
    # When it is parsed
    with pytest.raises(RuleError) as caught:
        parse_rule(data, attributes=DECLARED)
    # Then the message is "<path>: <problem>" and both parts are kept
    assert message == str(caught.value)
    assert message == f"{caught.value.path}: {caught.value.problem}"


def test_parse_builds_predicates_and_attribute_conditions() -> None:
    """Predicates and attribute conditions become frozen leaves holding converted values."""
    # Given a rule using every new node kind, written in YAML
    data = yaml.safe_load(
        """
        all:
          - {points_expiring: {within: 30d}, op: ">=", value: 100}
          - next_expiry: {op: within_next, value: 2w}
          - {reachable: sms}
          - {consented: email}
          - {consented: sms, for: service}
          - {received: winter-sale, within_last: 12h}
          - {received: welcome}
          - {field: attributes.score, op: between, value: [1, 2.5]}
        """
    )
    # When it is parsed with the score attribute declared
    rule = parse_rule(data, attributes={"score": "number"})
    # Then each leaf is the frozen value it stands for
    assert (
        All(
            rules=(
                PointsExpiring(within=timedelta(days=30), op=">=", value=100),
                Condition(field="next_expiry", op="within_next", value=timedelta(weeks=2)),
                Reachable(channel="sms"),
                Consented(channel="email", purpose="marketing"),
                Consented(channel="sms", purpose="service"),
                Received(campaign="winter-sale", within_last=timedelta(hours=12)),
                Received(campaign="welcome"),
                Attribute(key="score", type=FieldType.NUMBER, op="between", value=(1, 2.5)),
            )
        )
        == rule
    )


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"shoe size": "integer"}, 'attributes: "shoe size" is not a valid attribute key'),
        (
            {"birthday": "date"},
            'attributes.birthday: unknown type "date"; '
            "expected one of text, integer, number, boolean, instant, text_list",
        ),
    ],
    ids=["bad-key", "unknown-type"],
)
def test_attribute_declarations_are_checked(attributes: dict[str, str], message: str) -> None:
    """A program's attribute declarations are checked before any rule uses them."""
    # Given a malformed declaration
    # When any rule is parsed with it
    with pytest.raises(RuleError) as caught:
        parse_rule(GOLD, attributes=attributes)
    # Then the declaration is named
    assert message == str(caught.value)


def test_limits_are_inclusive() -> None:
    """A rule exactly at the depth, node and list limits is accepted."""
    # Given rules at each limit
    deepest = nested_nots(MAX_DEPTH - 1)
    widest = {"any": [GOLD] * (MAX_NODES - 1)}
    longest = leaf("points_balance", "in", list(range(MAX_LIST_VALUES)))
    # When they are parsed
    # Then none is refused
    for data in (deepest, widest, longest):
        parse_rule(data)


def test_errors_start_with_the_given_path() -> None:
    """A rule nested in a larger document reports paths from where it sits."""
    # Given a welcome step's ``unless`` rule with a bad operator
    data = {"all": [leaf("purchases_count", "=>", 0)]}
    # When it is parsed with its document path
    with pytest.raises(RuleError) as caught:
        parse_rule(data, "steps[1].unless")
    # Then the path starts there
    assert caught.value.path == "steps[1].unless.all[0].op"


_KEYS = st.sampled_from(
    [
        "all",
        "any",
        "not",
        "field",
        "op",
        "value",
        "points_expiring",
        "next_expiry",
        "within",
        "reachable",
        "consented",
        "for",
        "received",
        "within_last",
    ]
)
_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(sorted(FIELDS)),
    st.sampled_from(sorted(OPERATORS)),
    st.dates(),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.sampled_from(["2026-12-01T10:00:00Z", "2026-12-01", "9999-12-31T23:00-01:00"]),
    st.sampled_from(["30d", "12h", "2w", "0d", "999999d", "sms", "push", "service", "winter-sale"]),
    st.sampled_from([f"attributes.{key}" for key in DECLARED] + ["attributes.nope", "attributes."]),
)
_PLAUSIBLE = st.sampled_from(["gold", 500, 1.5, True, "2026-12-01T10:00:00Z", "30d"])
_NEAR_PREDICATES = st.one_of(
    st.fixed_dictionaries(
        {"points_expiring": st.fixed_dictionaries({"within": _PLAUSIBLE}), "op": _PLAUSIBLE},
        optional={"value": _PLAUSIBLE},
    ),
    st.fixed_dictionaries({"reachable": st.sampled_from(["sms", "fax", "push", 1])}),
    st.fixed_dictionaries(
        {"consented": st.sampled_from(["email", "sms", "x"])},
        optional={"for": st.sampled_from(["service", "marketing", "nope", None])},
    ),
    st.fixed_dictionaries(
        {"received": st.sampled_from(["winter-sale", "Bad Name", "", None])},
        optional={"within_last": _PLAUSIBLE},
    ),
)
_NEAR_CONDITIONS = st.fixed_dictionaries(
    {
        "field": st.sampled_from(sorted(FIELDS) + [f"attributes.{key}" for key in DECLARED]),
        "op": st.sampled_from(sorted(OPERATORS)),
    },
    optional={"value": _PLAUSIBLE | _ATOMS | st.lists(_PLAUSIBLE | _ATOMS, max_size=3)},
)
_TREES = st.recursive(
    _ATOMS | _NEAR_CONDITIONS | _NEAR_PREDICATES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_KEYS | st.text(max_size=5) | st.integers(), children, max_size=4),
        st.dictionaries(_KEYS, children, min_size=1, max_size=3),
    ),
    max_leaves=25,
)


@settings(max_examples=100, deadline=None)
@given(data=_TREES)
def test_any_decoded_value_parses_or_raises_rule_error(data: object) -> None:
    """Whatever YAML or JSON decodes to, parse_rule returns a Rule or raises RuleError."""
    # Given an arbitrary tree of mappings, lists and scalars
    # When it is parsed
    refusal: RuleError | None = None
    try:
        rule = parse_rule(data, attributes=DECLARED)
    except RuleError as error:
        refusal = error
    # Then a refusal is a RuleError with a path and a problem, and an acceptance
    # is a rule that compiles and evaluates on a member with no values
    if refusal is not None:
        assert refusal.path.startswith("segment")
        assert refusal.problem
    else:
        compile_rule(rule)
        evaluate_rule(rule, {})
        evaluate_rule(rule, {"attributes": {"shoe": "x", "tags": "vip"}, "lots": [{}]})
