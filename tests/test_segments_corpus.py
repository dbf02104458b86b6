"""The full rule language on real engines: SQLite, PostgreSQL and evaluate_rule agree.

About 80 members are seeded with awkward values (attributes missing, JSON
null or of the wrong type; instants at the window edges; expired, redeemed
and undated point lots; opted-in and opted-out consents; revoked push tokens;
sent, failed and undated deliveries). Every corpus rule must select the same
members on both engines as ``evaluate_rule`` picks from the seed data itself,
with one fixed ``now``.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select

from segments import compile_rule, evaluate_rule, parse_rule
from store import make_engine
from store.models import (
    Campaign,
    CampaignVersion,
    Consent,
    Delivery,
    Member,
    PointLot,
    PushToken,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)
ATTRIBUTES = {
    "favourite_store": "text",
    "visits": "integer",
    "score": "number",
    "vip": "boolean",
    "birthday": "instant",
    "tags": "text_list",
}
MISSING = object()
"""An attribute pool entry meaning: the key is absent."""
ATTRIBUTE_POOLS: dict[str, list[Any]] = {
    "favourite_store": ["Paris-1", "paris-1", "Lyon", "", 5, None, MISSING],
    "visits": [0, 3, 10, 10.0, -2, "7", True, None, MISSING, 10**17],
    "score": [1.5, 2, 2.0, -0.25, "3", True, None, MISSING],
    "vip": [True, False, "true", 1, None, MISSING],
    "birthday": [
        "2026-06-10T00:00:00Z",
        "2026-06-10T00:00:00.500Z",
        "2026-06-10T00:00:00.000001+00:00",
        "2026-05-16T12:00:00Z",  # exactly 30 days before NOW
        "2026-06-16T12:00:00Z",  # in the future
        "2025-01-01T00:00:00+02:00",  # not UTC: missing
        "2026-06-14",
        "not a date",
        "2026-13-45T99:99:99Z",  # the right shape, compared as text
        1234,
        None,
        MISSING,
    ],
    "tags": [["vip", "early"], ["early"], [], "vip", [1, "1"], [["vip"]], {"vip": "vip"}, None],
}
POOLS: dict[str, list[Any]] = {
    "name": ["Ann", "ann", "Anna", "A%b", "A_c", "100%", "O'Brien", "", None],
    "email": ["ann@example.com", "", None],
    "phone": ["+15555550100", "+33612345678", "15555550100", "+1 555", "+", "", "+١٢٣", None],
    "tier": ["gold", "platinum", "silver", None],
    "points_balance": [0, 99, 100, 500, 501, 2000],
    "enrolled_at": [NOW - 10 * DAY, NOW - 30 * DAY, NOW - 30 * DAY - TICK, NOW - 200 * DAY, None],
    "last_purchase_at": [NOW + DAY, NOW + 7 * DAY, NOW - DAY, NOW, None],
}
ADDRESSES: list[tuple[Any, ...]] = [
    # line1, city, zip, country, state
    ("1 Main St", "Springfield", "12345", "US", "NY"),
    ("1 Main St", "Springfield", "12345", "us", "NY"),
    ("1 Main St", "Springfield", "12345", "uS", ""),  # US without a state
    ("1 Main St", "Springfield", "12345", "US", None),
    ("5 Rue Neuve", "Paris", "75001", "FR", None),
    ("\t5 Rue Neuve\n", "Paris", "75001", "FR", ""),
    ("5 Rue Neuve", "Paris", "75001", " ", None),  # blank country
    ("  ", "Paris", "75001", "FR", None),  # blank line 1
    ("5 Rue Neuve", "Paris", " ", "FR", None),  # blank postal code
    ("5 Rue Neuve", None, "75001", "FR", None),
    ("5 Rue Neuve", "Paris", "75001", "", None),
    (None, None, None, None, None),
]
ADDRESS_FIELDS = (
    "address_line1",
    "address_city",
    "address_zip",
    "address_country",
    "address_state",
)
CAMPAIGNS = ["winter-sale", "points-expiry", "welcome"]
LOT_EXPIRIES = [NOW + 5 * DAY, NOW + 30 * DAY, NOW + 30 * DAY + TICK, NOW - DAY, NOW, None]
SENT_AT = [NOW - 5 * DAY, NOW - 30 * DAY, NOW - 31 * DAY, NOW + DAY, None]


def seed_members(count: int = 80) -> list[dict[str, Any]]:
    """``count`` members as ``evaluate_rule`` reads them, drawn from the pools with one seed."""
    rng = random.Random(20260615)
    members = []
    for i in range(count):
        member = {name: rng.choice(pool) for name, pool in POOLS.items()}
        address = rng.choice(ADDRESSES)
        member |= dict(zip(ADDRESS_FIELDS, address, strict=True))
        attributes = {key: rng.choice(pool) for key, pool in ATTRIBUTE_POOLS.items()}
        lots = [
            {
                "points": rng.choice([50, 100, 120]),
                "redeemed": rng.choice([0, 0, 20, 120, 150]),
                "expires_at": rng.choice(LOT_EXPIRIES),
            }
            for _ in range(rng.randint(0, 3))
        ]
        received = [
            {
                "campaign": rng.choice(CAMPAIGNS),
                "status": rng.choice(["sent", "delivered", "failed", "pending"]),
                "sent_at": rng.choice(SENT_AT),
            }
            for _ in range(rng.randint(0, 2))
        ]
        member |= {
            "id": i + 1,
            "external_id": f"m{i:03d}",
            "locale": "en",
            "purchases_count": 0,
            "attributes": {k: v for k, v in attributes.items() if v is not MISSING},
            "lots": lots,
            "consents": {
                channel: status
                for channel in ("sms", "email", "push")
                if (status := rng.choice(["opted_in", "opted_out", None])) is not None
            },
            "push_tokens": [
                {"revoked_at": rng.choice([None, NOW - DAY])} for _ in range(rng.randint(0, 2))
            ],
            "received": received,
            "deleted_at": None,
        }
        members.append(member)
    return members


MEMBERS = seed_members()
_RELATED = ("lots", "consents", "push_tokens", "received")


def insert_world(engine: Engine, members: list[dict[str, Any]]) -> None:
    """Write the members and their lots, consents, push tokens and deliveries."""
    with engine.begin() as conn:
        conn.execute(
            insert(Member), [{k: v for k, v in m.items() if k not in _RELATED} for m in members]
        )
        campaign_ids = {}
        for i, name in enumerate(CAMPAIGNS, start=1):
            conn.execute(
                insert(Campaign).values(id=i, name=name, kind="broadcast", category="marketing")
            )
            conn.execute(
                insert(CampaignVersion).values(
                    id=i, campaign_id=i, version=1, spec={}, templates={}, source="", digest="0"
                )
            )
            campaign_ids[name] = i
        lots, consents, tokens, deliveries = [], [], [], []
        for m in members:
            lots += [
                {**lot, "member_id": m["id"], "earned_at": NOW - 400 * DAY} for lot in m["lots"]
            ]
            consents += [
                {"member_id": m["id"], "channel": c, "status": s, "source": "test"}
                for c, s in m["consents"].items()
            ]
            tokens += [
                {"member_id": m["id"], "kind": "fcm", "token": f"t{m['id']}-{j}", **t}
                for j, t in enumerate(m["push_tokens"])
            ]
            deliveries += [
                {
                    "member_id": m["id"],
                    "dedupe_key": f"d{m['id']}-{j}",
                    "campaign_id": campaign_ids[d["campaign"]],
                    "campaign_version_id": campaign_ids[d["campaign"]],
                    "category": "marketing",
                    "channels": "email",
                    "status": d["status"],
                    "sent_at": d["sent_at"],
                }
                for j, d in enumerate(m["received"])
            ]
        for model, rows in (
            (PointLot, lots),
            (Consent, consents),
            (PushToken, tokens),
            (Delivery, deliveries),
        ):
            if rows:
                conn.execute(insert(model), rows)


def selected(
    engine: Engine, data: Any, now: datetime = NOW, *, whole_audience: bool = False
) -> set[str]:
    """The external ids the compiled rule selects (in the per-member or whole-audience shape)."""
    rule = parse_rule(data, attributes=ATTRIBUTES)
    where = compile_rule(rule, now=now, whole_audience=whole_audience)
    with engine.connect() as conn:
        return set(conn.scalars(select(Member.external_id).where(where)))


def expected(data: Any, now: datetime = NOW) -> set[str]:
    """The external ids ``evaluate_rule`` picks from the seed data."""
    rule = parse_rule(data, attributes=ATTRIBUTES)
    return {m["external_id"] for m in MEMBERS if evaluate_rule(rule, m, now=now)}


def leaf(field: str, op: str, value: Any = None) -> dict[str, Any]:
    """A condition as written in a rule file (no ``value`` key for the null tests)."""
    data: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        data["value"] = value
    return data


def attr(key: str, op: str, value: Any = None) -> dict[str, Any]:
    """A condition on a declared attribute."""
    return leaf(f"attributes.{key}", op, value)


CORPUS: dict[str, Any] = {
    # text: starts_with is case-sensitive and takes % and _ literally
    "name-starts-with": leaf("name", "starts_with", "Ann"),
    "name-starts-with-lowercase": leaf("name", "starts_with", "ann"),
    "name-starts-with-percent": leaf("name", "starts_with", "A%"),
    "name-starts-with-underscore": leaf("name", "starts_with", "A_"),
    "not-name-starts-with": {"not": leaf("name", "starts_with", "Ann")},
    # ordered and relative operators on columns
    "points-between": leaf("points_balance", "between", [100, 500]),
    "not-points-between": {"not": leaf("points_balance", "between", [100, 500])},
    "enrolled-within-last-30d": leaf("enrolled_at", "within_last", "30d"),
    "enrolled-older-than-30d": leaf("enrolled_at", "older_than", "30d"),
    "not-enrolled-older-than-30d": {"not": leaf("enrolled_at", "older_than", "30d")},
    "purchase-within-next-week": leaf("last_purchase_at", "within_next", "1w"),
    "purchase-within-last-24h": leaf("last_purchase_at", "within_last", "24h"),
    "enrolled-between": leaf(
        "enrolled_at", "between", ["2026-05-16T12:00:00Z", "2026-06-10T00:00:00+02:00"]
    ),
    "id-in": leaf("id", "in", [1, 2, 3, 40, 80, 81]),
    # text attributes: missing, JSON null and wrong types are all missing
    "store-equal": attr("favourite_store", "=", "Paris-1"),
    "store-not-equal": attr("favourite_store", "!=", "Paris-1"),
    "not-store-equal": {"not": attr("favourite_store", "=", "Paris-1")},
    "store-is-null": attr("favourite_store", "is null"),
    "store-starts-with": attr("favourite_store", "starts_with", "Paris"),
    "store-in-empty-text": attr("favourite_store", "in", ["", "Lyon"]),
    # integer and number attributes
    "visits-at-least": attr("visits", ">=", 3),
    "visits-between": attr("visits", "between", [0, 5]),
    "not-visits-above": {"not": attr("visits", ">", 5)},
    "visits-is-not-null": attr("visits", "is not null"),
    "score-above": attr("score", ">", 1.9),
    "score-equal-whole": attr("score", "=", 2),
    "score-between": attr("score", "between", [-1, 1.5]),
    "not-score-below": {"not": attr("score", "<", 0)},
    # boolean attributes
    "vip-true": attr("vip", "=", True),
    "vip-not-true": attr("vip", "!=", True),
    "not-vip-true": {"not": attr("vip", "=", True)},
    "vip-is-null": attr("vip", "is null"),
    # instant attributes, compared as UTC text
    "birthday-within-last-week": attr("birthday", "within_last", "7d"),
    "birthday-within-last-30d-edge": attr("birthday", "within_last", "30d"),
    "birthday-older-than-day": attr("birthday", "older_than", "1d"),
    "birthday-after-fraction": attr("birthday", ">", "2026-06-10T00:00:00.4Z"),
    "birthday-equal": attr("birthday", "=", "2026-06-10T02:00:00+02:00"),
    "not-birthday-within-next": {"not": attr("birthday", "within_next", "2d")},
    "birthday-is-null": attr("birthday", "is null"),
    # text lists
    "tags-contain-vip": attr("tags", "contains", "vip"),
    "not-tags-contain-vip": {"not": attr("tags", "contains", "vip")},
    "tags-contain-number-text": attr("tags", "contains", "1"),
    "tags-is-null": attr("tags", "is null"),
    # point lots
    "expiring-30d-at-least-100": {"points_expiring": {"within": "30d"}, "op": ">=", "value": 100},
    "expiring-30d-none": {"points_expiring": {"within": "30d"}, "op": "=", "value": 0},
    "not-expiring-week": {"not": {"points_expiring": {"within": "1w"}, "op": ">", "value": 0}},
    "expiring-between": {"points_expiring": {"within": "720h"}, "op": "between", "value": [1, 150]},
    "next-expiry-within-14d": {"next_expiry": {"op": "within_next", "value": "14d"}},
    "next-expiry-is-null": leaf("next_expiry", "is null"),
    "next-expiry-after": leaf("next_expiry", ">=", "2026-07-15T12:00:00Z"),
    # reachability and consent
    "reachable-sms": {"reachable": "sms"},
    "reachable-email": {"reachable": "email"},
    "reachable-push": {"reachable": "push"},
    "reachable-mail": {"reachable": "direct_mail"},
    "not-reachable-mail": {"not": {"reachable": "direct_mail"}},
    "consented-email-marketing": {"consented": "email"},
    "consented-sms-service": {"consented": "sms", "for": "service"},
    "not-consented-push-transactional": {"not": {"consented": "push", "for": "transactional"}},
    "consented-mail-service": {"consented": "direct_mail", "for": "service"},
    # history
    "received-winter": {"received": "winter-sale"},
    "received-winter-30d": {"received": "winter-sale", "within_last": "30d"},
    "not-received-expiry-week": {"not": {"received": "points-expiry", "within_last": "1w"}},
    "received-unknown-campaign": {"received": "no-such-campaign"},
    # together
    "broadcast": {
        "all": [
            leaf("tier", "in", ["gold", "platinum"]),
            {"points_expiring": {"within": "30d"}, "op": ">=", "value": 50},
            {"any": [{"reachable": "push"}, {"reachable": "email"}]},
            {"not": {"received": "winter-sale", "within_last": "30d"}},
        ]
    },
    "nested-attributes": {
        "any": [
            {"all": [attr("vip", "=", True), {"not": attr("tags", "contains", "early")}]},
            {"not": {"any": [attr("visits", "is null"), attr("score", "<=", 2)]}},
        ]
    },
    # sums that hold for 0 points (members without lots match), and any of member sets,
    # which the whole-audience shape compiles to other forms
    "expiring-30d-under-100": {"points_expiring": {"within": "30d"}, "op": "<", "value": 100},
    "expiring-30d-not-100": {"points_expiring": {"within": "30d"}, "op": "!=", "value": 100},
    "expiring-30d-in-zero": {"points_expiring": {"within": "30d"}, "op": "in", "value": [0, 80]},
    "expiring-30d-not-in": {
        "points_expiring": {"within": "30d"},
        "op": "not in",
        "value": [0, 100],
    },
    "expiring-30d-between-zero": {
        "points_expiring": {"within": "30d"},
        "op": "between",
        "value": [0, 80],
    },
    "push-or-sms-not-received": {
        "all": [
            {"any": [{"reachable": "push"}, {"all": [{"consented": "sms"}, {"reachable": "sms"}]}]},
            {"not": {"received": "winter-sale", "within_last": "30d"}},
        ]
    },
    "any-of-sets-and-sums": {
        "any": [
            {"received": "welcome"},
            {"points_expiring": {"within": "30d"}, "op": ">=", "value": 100},
            {"all": [leaf("tier", "=", "gold"), {"consented": "email"}]},
        ]
    },
    "not-any-of-sets": {"not": {"any": [{"consented": "email"}, {"reachable": "push"}]}},
    "any-of-set-and-column": {"any": [{"reachable": "push"}, leaf("tier", "=", "gold")]},
    "any-of-nested-any": {
        "any": [
            {"any": [{"consented": "push"}, {"received": "winter-sale"}]},
            {
                "all": [
                    {"points_expiring": {"within": "30d"}, "op": "<", "value": 50},
                    {"consented": "sms"},
                ]
            },
        ]
    },
}
#: Rules that select no one or everyone by design, in both shapes.
EDGE: dict[str, Any] = {
    "expiring-above-everyone": {"points_expiring": {"within": "30d"}, "op": ">", "value": 10**6},
    "expiring-at-most-everyone": {
        "points_expiring": {"within": "30d"},
        "op": "<=",
        "value": 10**6,
    },
    "expiring-at-least-0": {"points_expiring": {"within": "30d"}, "op": ">=", "value": 0},
    "any-of-empty-sets": {"any": [{"received": "no-such-campaign"}, {"consented": "direct_mail"}]},
}


@pytest.fixture
def world(engine: Engine) -> Engine:
    """The engine (SQLite, then PostgreSQL) holding the seeded members and their rows."""
    insert_world(engine, MEMBERS)
    return engine


def test_corpus_is_large_enough_and_not_trivial() -> None:
    """The corpus has 40+ rules, and the seed gives almost every rule members in and out."""
    # Given the corpus and the seed members
    # When the reference picks each rule's members
    sizes = {name: len(expected(data)) for name, data in CORPUS.items()}
    # Then there are enough rules, and only the deliberately empty one selects no one
    assert len(CORPUS) >= 40
    trivial = {name for name, size in sizes.items() if size in (0, len(MEMBERS))}
    assert {"received-unknown-campaign", "consented-mail-service"} == trivial


@pytest.mark.parametrize("whole_audience", [False, True], ids=["per-member", "whole-audience"])
def test_corpus_selects_the_same_members_on_each_engine_as_the_reference(
    world: Engine, whole_audience: bool
) -> None:
    """Every corpus rule selects in SQL exactly the members evaluate_rule picks, in both shapes."""
    # Given the seeded world and the corpus
    # When each rule is compiled with the fixed now, in one shape, and run
    actual = {
        name: selected(world, data, whole_audience=whole_audience) for name, data in CORPUS.items()
    }
    # Then each result is the reference set (the same on SQLite and PostgreSQL)
    assert {name: expected(data) for name, data in CORPUS.items()} == actual


@pytest.mark.parametrize("whole_audience", [False, True], ids=["per-member", "whole-audience"])
def test_sums_and_sets_that_select_no_one_or_everyone(world: Engine, whole_audience: bool) -> None:
    """Null tests on the sum, a bound 0 passes, and sets that are empty agree with the reference."""
    # Given rules whose reference selects no one or every member
    references = {name: expected(data) for name, data in EDGE.items()}
    assert {len(m) for m in references.values()} == {0, len(MEMBERS)}
    # When each is compiled in one shape and run
    actual = {
        name: selected(world, data, whole_audience=whole_audience) for name, data in EDGE.items()
    }
    # Then each selects what the reference picks
    assert references == actual


def test_whole_audience_shape_uses_grouped_sums_and_one_union() -> None:
    """The whole-audience shape is the one described: no correlated sum, one EXISTS for any."""
    # Given a sum that holds for 0, one that does not, and an any of member sets
    under = parse_rule(CORPUS["expiring-30d-under-100"], attributes=ATTRIBUTES)
    over = parse_rule(CORPUS["expiring-30d-at-least-100"], attributes=ATTRIBUTES)
    either = parse_rule(CORPUS["push-or-sms-not-received"], attributes=ATTRIBUTES)
    # When each is compiled for the whole audience
    sql = {
        name: str(compile_rule(rule, now=NOW, whole_audience=True)).upper()
        for name, rule in (("under", under), ("over", over), ("either", either))
    }
    # Then sums are grouped (NOT EXISTS when 0 matches) and the any is one EXISTS over a union
    assert "HAVING" in sql["over"]
    assert "COALESCE" not in sql["over"]
    assert sql["under"].startswith("NOT (EXISTS")
    assert "HAVING" in sql["under"]
    assert sql["either"].count("UNION ALL") == 1
    assert " OR EXISTS" not in sql["either"]


@pytest.mark.parametrize("whole_audience", [False, True], ids=["per-member", "whole-audience"])
def test_compiled_corpus_is_never_null(world: Engine, whole_audience: bool) -> None:
    """Each compiled corpus rule is TRUE or FALSE for every member, so NOT is exact."""
    # Given the seeded world
    for name, data in CORPUS.items():
        # When the compiled rule is tested for NULL
        rule = parse_rule(data, attributes=ATTRIBUTES)
        where = compile_rule(rule, now=NOW, whole_audience=whole_audience).is_(None)
        with world.connect() as conn:
            nulls = conn.scalar(select(Member.id).where(where).limit(1))
        # Then no member gives NULL
        assert (name, None) == (name, nulls)


def test_relative_dates_follow_now(world: Engine) -> None:
    """Moving ``now`` moves the window: the same rule selects other members a month later."""
    # Given a relative rule
    data = leaf("enrolled_at", "within_last", "30d")
    later = NOW + 30 * DAY
    # When it is run at two instants
    # Then each run is the reference at that instant, and they differ
    assert expected(data, later) == selected(world, data, later)
    assert expected(data) != expected(data, later)


@pytest.fixture(scope="module")
def sqlite_world(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One seeded SQLite database shared by the property test's examples."""
    path = tmp_path_factory.mktemp("segments-world") / "world.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    insert_world(engine, MEMBERS)
    yield engine
    engine.dispose()


def _scalar_values(key: str) -> st.SearchStrategy[Any]:
    values = [v for v in ATTRIBUTE_POOLS[key] if v is not MISSING and v is not None]
    return st.sampled_from([v for v in values if not isinstance(v, list | dict)] or [0])


_DURATIONS = st.sampled_from(["1h", "24h", "1d", "7d", "30d", "2w", "200d"])
_ATTRIBUTE_LEAVES = st.one_of(
    st.builds(
        attr,
        st.just("favourite_store"),
        st.sampled_from(["=", "!=", "starts_with"]),
        _scalar_values("favourite_store").filter(lambda v: isinstance(v, str)),
    ),
    st.builds(
        attr, st.just("visits"), st.sampled_from(["=", "<", ">=", "!="]), st.integers(-3, 12)
    ),
    st.builds(
        attr,
        st.just("score"),
        st.sampled_from(["=", "<", ">="]),
        st.sampled_from([-0.25, 1.5, 2, 2.5]),
    ),
    st.builds(attr, st.just("vip"), st.sampled_from(["=", "!="]), st.booleans()),
    st.builds(
        attr,
        st.just("birthday"),
        st.sampled_from(["within_last", "older_than", "within_next"]),
        _DURATIONS,
    ),
    st.builds(attr, st.just("tags"), st.just("contains"), st.sampled_from(["vip", "early", "1"])),
    st.builds(
        attr, st.sampled_from(sorted(ATTRIBUTES)), st.sampled_from(["is null", "is not null"])
    ),
)
_OTHER_LEAVES = st.one_of(
    st.builds(
        leaf,
        st.just("points_balance"),
        st.sampled_from(["<", ">=", "="]),
        st.sampled_from([99, 100, 500]),
    ),
    st.builds(
        leaf,
        st.sampled_from(["enrolled_at", "last_purchase_at", "next_expiry"]),
        st.sampled_from(["within_last", "older_than", "within_next"]),
        _DURATIONS,
    ),
    st.builds(
        leaf,
        st.sampled_from(["name", "phone", "email"]),
        st.just("starts_with"),
        st.sampled_from(["A", "An", "+1", "", "a"]),
    ),
    st.builds(
        lambda w, op, v: {"points_expiring": {"within": w}, "op": op, "value": v},
        _DURATIONS,
        st.sampled_from(["=", ">", "<="]),
        st.sampled_from([0, 50, 100, 200]),
    ),
    st.builds(lambda c: {"reachable": c}, st.sampled_from(["sms", "email", "push", "direct_mail"])),
    st.builds(
        lambda c, p: {"consented": c, "for": p},
        st.sampled_from(["sms", "email", "push"]),
        st.sampled_from(["marketing", "service", "transactional"]),
    ),
    st.builds(
        lambda c, w: {"received": c} | ({"within_last": w} if w else {}),
        st.sampled_from([*CAMPAIGNS, "nope"]),
        st.none() | _DURATIONS,
    ),
)


def _trees(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    leaves = _ATTRIBUTE_LEAVES | _OTHER_LEAVES
    if depth == 0:
        return leaves
    inner = _trees(depth - 1)
    return st.one_of(
        leaves,
        st.builds(lambda rs: {"all": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda rs: {"any": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda r: {"not": r}, inner),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_trees(depth=3), whole_audience=st.booleans())
def test_random_rules_with_every_node_kind_agree_with_the_reference_on_sqlite(
    sqlite_world: Engine, data: dict[str, Any], whole_audience: bool
) -> None:
    """Any valid rule built from every node kind selects on SQLite what evaluate_rule picks."""
    # Given a random valid rule over columns, attributes, lots, consent, reach and history
    parse_rule(data, attributes=ATTRIBUTES)
    # When it is compiled in either shape and run on the seeded SQLite database
    actual = selected(sqlite_world, data, whole_audience=whole_audience)
    # Then it selects the reference set
    assert expected(data) == actual
