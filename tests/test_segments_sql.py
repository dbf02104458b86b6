"""Compiled rules on real engines agree with the Python reference, NULLs included.

Every test here seeds the same members (some with missing values, a few
deleted) and compares the members a compiled rule selects with the set that
``evaluate_rule`` picks from the seed data itself, so the storage round trip
(instants as naive UTC on SQLite, timestamptz on PostgreSQL) is tested too.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select

from segments import (
    FIELDS,
    OPERATORS,
    Arity,
    FieldType,
    Rule,
    audience_filter,
    compile_rule,
    evaluate_rule,
    parse_rule,
)
from store import Member, make_engine

NEW_YEAR = datetime(2025, 1, 1, tzinfo=UTC)
INSTANTS = [
    NEW_YEAR,
    NEW_YEAR - timedelta(microseconds=1),
    NEW_YEAR + timedelta(microseconds=1),
    datetime(2023, 6, 15, 8, 30, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
]
POOLS: dict[str, list[Any]] = {
    "name": ["Ann", "O'Brien", "x' OR 1=1 --", None],
    "email": ["ann@example.com", "", None],
    "phone": ["+15555550100", "+33612345678", None],
    "locale": ["en", "fr", "pt-BR"],
    "time_zone": ["America/New_York", "Europe/Paris", None],
    "tier": ["gold", "platinum", "silver", "basic", "Gold", "", None, None],
    "points_balance": [0, 99, 100, 499, 500, 501, 2000, -20],
    "enrolled_at": [*INSTANTS, None],
    "purchases_count": [0, 0, 1, 5],
    "last_purchase_at": [*INSTANTS, None, None],
    "address_country": ["US", "CA", "FR", "BR", None],
    "address_state": ["NY", "QC", None],
    "address_city": ["New York", "São Paulo", "Zürich", None],
}
DELETED_AT = datetime(2025, 6, 1, tzinfo=UTC)


def seed_members() -> list[dict[str, Any]]:
    """60 members: 56 drawn from the pools, and 4 written by hand at the edges."""
    rng = random.Random(20261201)
    members = [{name: rng.choice(pool) for name, pool in POOLS.items()} for _ in range(56)]
    members += [
        # every optional value missing
        {name: None for name in POOLS}
        | {"locale": "en", "points_balance": 0, "purchases_count": 0},
        # a prefix of a longer value: "US" must not match "USA"
        {name: pool[0] for name, pool in POOLS.items()} | {"address_country": "US"},
        # exactly at the boundaries
        {name: pool[0] for name, pool in POOLS.items()}
        | {"points_balance": 500, "enrolled_at": NEW_YEAR, "last_purchase_at": NEW_YEAR},
        {name: pool[-1] for name, pool in POOLS.items()} | {"tier": "gold"},
    ]
    for i, member in enumerate(members):
        member["external_id"] = f"m{i:03d}"
        member["deleted_at"] = DELETED_AT if i % 13 == 5 else None
    return members


MEMBERS = seed_members()


def insert_members(engine: Engine) -> None:
    """Write the seed members."""
    with engine.begin() as conn:
        conn.execute(insert(Member), MEMBERS)


def selected(engine: Engine, where: Any) -> set[str]:
    """The external ids of the members ``where`` selects."""
    with engine.connect() as conn:
        return set(conn.scalars(select(Member.external_id).where(where)))


def expected(rule: Rule) -> set[str]:
    """The external ids of the seed members the Python reference picks."""
    return {m["external_id"] for m in MEMBERS if evaluate_rule(rule, m)}


def leaf(field: str, op: str, value: Any = None) -> dict[str, Any]:
    """A condition as written in a rule file (no ``value`` key for the null tests)."""
    data: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        data["value"] = value
    return data


CORPUS: dict[str, Any] = {
    "tier-equal": leaf("tier", "=", "gold"),
    "tier-not-equal": leaf("tier", "!=", "gold"),
    "not-tier-equal": {"not": leaf("tier", "=", "gold")},
    "tier-in": leaf("tier", "in", ["gold", "platinum"]),
    "tier-not-in": leaf("tier", "not in", ["gold", "platinum"]),
    "not-tier-in": {"not": leaf("tier", "in", ["gold", "platinum"])},
    "tier-is-null": leaf("tier", "is null"),
    "tier-is-not-null": leaf("tier", "is not null"),
    "not-tier-is-null": {"not": leaf("tier", "is null")},
    "double-not": {"not": {"not": leaf("tier", "=", "gold")}},
    "tier-empty-text": leaf("tier", "=", ""),
    "points-at-least": leaf("points_balance", ">=", 500),
    "points-below": leaf("points_balance", "<", 500),
    "points-not-zero": leaf("points_balance", "!=", 0),
    "design-broadcast": {
        "all": [leaf("tier", "in", ["gold", "platinum"]), leaf("points_balance", ">=", 500)]
    },
    "not-design-broadcast": {
        "not": {
            "all": [leaf("tier", "in", ["gold", "platinum"]), leaf("points_balance", ">=", 500)]
        }
    },
    "enrolled-since-new-year": leaf("enrolled_at", ">=", "2025-01-01T00:00:00Z"),
    "enrolled-before-offset": leaf("enrolled_at", "<", "2025-01-01T01:00:00+01:00"),
    "enrolled-exactly": leaf("enrolled_at", "=", "2024-12-31T19:00:00.000001-05:00"),
    "purchased-after": leaf("last_purchase_at", ">", "2024-12-31T23:59:59.999999Z"),
    "not-purchased-after": {"not": leaf("last_purchase_at", ">", "2024-12-31T23:59:59.999999Z")},
    "purchase-in-instants": leaf(
        "last_purchase_at", "in", ["2025-01-01T00:00:00Z", "2023-06-15T10:30:00+02:00"]
    ),
    "never-bought": {"any": [leaf("purchases_count", "=", 0), leaf("last_purchase_at", "is null")]},
    "country-prefix-does-not-match": leaf("address_country", "=", "USA"),
    "quote-in-name": leaf("name", "=", "O'Brien"),
    "injection-is-just-text": leaf("name", "in", ["x' OR 1=1 --", "nobody"]),
    "non-ascii-city": leaf("address_city", "not in", ["São Paulo", "Zürich"]),
    "email-empty-not-missing": leaf("email", "=", ""),
    "locale-and-zone": {
        "all": [leaf("locale", "in", ["en", "fr"]), leaf("time_zone", "=", "Europe/Paris")]
    },
    "external-ids": leaf("external_id", "in", ["m000", "m007", "m059", "m999"]),
    "nested": {
        "all": [
            {"any": [leaf("tier", "=", "gold"), {"not": leaf("points_balance", "<", 100)}]},
            {
                "not": {
                    "any": [
                        leaf("address_country", "in", ["US", "CA"]),
                        leaf("address_state", "is null"),
                    ]
                }
            },
            {"not": {"all": [leaf("phone", "is not null"), leaf("email", "!=", "")]}},
        ]
    },
}


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    """The engine (SQLite, then PostgreSQL) holding the seed members."""
    insert_members(engine)
    return engine


def test_corpus_selects_what_the_reference_picks(seeded: Engine) -> None:
    """Every corpus rule selects in SQL exactly the members evaluate_rule picks."""
    # Given the seed members in the database and the corpus of rules
    rules = {name: parse_rule(data) for name, data in CORPUS.items()}
    # When each rule is compiled and run
    actual = {name: selected(seeded, compile_rule(rule)) for name, rule in rules.items()}
    # Then each result is the reference set
    assert {name: expected(rule) for name, rule in rules.items()} == actual


def test_corpus_is_not_trivial() -> None:
    """The seed data gives most corpus rules some members in and some out."""
    # Given the corpus and the seed members
    # When the reference picks each rule's members
    sizes = {name: len(expected(parse_rule(data))) for name, data in CORPUS.items()}
    # Then the rules that should split the members do
    trivial = {name for name, size in sizes.items() if size in (0, len(MEMBERS))}
    assert {"country-prefix-does-not-match"} == trivial


def test_missing_values_follow_the_null_rule_in_sql(seeded: Engine) -> None:
    """In SQL, != skips members with no tier and not(=) takes them, as documented."""
    # Given the seed members, some with no tier
    no_tier = {m["external_id"] for m in MEMBERS if m["tier"] is None}
    assert no_tier
    # When != and not(=) are run
    not_equal = selected(seeded, compile_rule(parse_rule(leaf("tier", "!=", "gold"))))
    negated = selected(seeded, compile_rule(parse_rule({"not": leaf("tier", "=", "gold")})))
    # Then the members with no tier are only in the second
    assert set() == no_tier & not_equal
    assert no_tier == no_tier & negated


def test_compiled_leaves_are_never_null(seeded: Engine) -> None:
    """Every compiled corpus rule is TRUE or FALSE for every member, never NULL."""
    # Given the seed members and the corpus
    for name, data in CORPUS.items():
        # When the compiled rule is selected as a value
        query = select(func.count()).where(compile_rule(parse_rule(data)).is_(None))
        with seeded.connect() as conn:
            nulls = conn.scalar(query)
        # Then no member gives NULL
        assert (name, 0) == (name, nulls)


def test_audience_filter_drops_deleted_members(seeded: Engine) -> None:
    """The audience is the rule's members that are not deleted; no rule means everyone."""
    # Given seed members, some deleted
    alive = {m["external_id"] for m in MEMBERS if m["deleted_at"] is None}
    assert len(alive) < len(MEMBERS)
    rule = parse_rule(CORPUS["not-tier-equal"])
    # When the audience filter is run with a rule and without one
    with_rule = selected(seeded, audience_filter(rule))
    without = selected(seeded, audience_filter(None))
    # Then deleted members are in neither
    assert expected(rule) & alive == with_rule
    assert alive == without


@pytest.fixture(scope="module")
def sqlite_seeded(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One SQLite database with the seed members, shared by the property test's examples."""
    path = tmp_path_factory.mktemp("segments") / "members.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    insert_members(engine)
    yield engine
    engine.dispose()


OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]


def _instant_texts() -> st.SearchStrategy[str]:
    """Seed instants (and their neighbours) written in ISO-8601 with various offsets."""
    near = st.sampled_from(INSTANTS).flatmap(
        lambda t: st.sampled_from([t, t + timedelta(microseconds=1), t - timedelta(days=1)])
    )
    return st.builds(
        lambda t, tz: t.astimezone(tz).isoformat().replace("+00:00", "Z"),
        near,
        st.sampled_from(OFFSETS),
    )


def _values(field: str) -> st.SearchStrategy[Any]:
    """Values for ``field`` that often hit the seed data, and sometimes just miss."""
    field_type = FIELDS[field].type
    if field_type is FieldType.INSTANT:
        return _instant_texts()
    seen = sorted({m[field] for m in MEMBERS if m[field] is not None})
    if field_type is FieldType.INTEGER:
        return st.sampled_from(seen).flatmap(lambda n: st.sampled_from([n - 1, n, n + 1]))
    # PostgreSQL refuses NUL in text and nothing encodes a lone surrogate: the parser refuses both
    letters = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
    return st.sampled_from(seen) | st.text(letters, max_size=3)


@st.composite
def _conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(POOLS)))
    field_type = FIELDS[field].type
    op = draw(st.sampled_from([n for n, o in OPERATORS.items() if o.applies_to(field_type)]))
    arity = OPERATORS[op].arity
    if arity is Arity.NONE:
        return leaf(field, op)
    if arity is Arity.ONE:
        return leaf(field, op, draw(_values(field)))
    if arity is Arity.DURATION:
        return leaf(field, op, draw(st.sampled_from(["1h", "30d", "2w", "1000d"])))
    if arity is Arity.PAIR:
        pair = draw(st.lists(_values(field), min_size=2, max_size=2))
        instants = field_type is FieldType.INSTANT
        return leaf(field, op, sorted(pair, key=datetime.fromisoformat if instants else None))
    return leaf(field, op, draw(st.lists(_values(field), min_size=1, max_size=4)))


def _rules(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    if depth == 0:
        return _conditions()
    inner = _rules(depth - 1)
    return st.one_of(
        _conditions(),
        st.builds(lambda rs: {"all": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda rs: {"any": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda r: {"not": r}, inner),
    )


@settings(max_examples=100, deadline=None)
@given(data=_rules(depth=3))
def test_random_valid_rules_agree_with_the_reference_on_sqlite(
    sqlite_seeded: Engine, data: dict[str, Any]
) -> None:
    """Any valid rule parses, compiles, and selects on SQLite what evaluate_rule picks."""
    # Given a randomly built valid rule
    rule = parse_rule(data)
    # When it is compiled and run on the seeded SQLite database
    actual = selected(sqlite_seeded, compile_rule(rule))
    # Then it selects the reference set
    assert expected(rule) == actual
