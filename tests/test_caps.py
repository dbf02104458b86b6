"""Frequency caps on the real Redis: atomic across workers, rebuilt from the ledger."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine

from store import Campaign, CampaignVersion, Delivery, make_sessionmaker
from workers.cap_keys import PER_CALL
from workers.caps import (
    CapCounter,
    Capped,
    CapRequest,
    LedgerEntry,
    Reservation,
    ledger_from,
    recent_deliveries,
)
from workers.program import CapRule

from .support import add_member

pytestmark = pytest.mark.redis

NY = "America/New_York"
BERLIN = "Europe/Berlin"
WEEKLY = CapRule(
    name="marketing-weekly",
    scope="all",
    window=timedelta(days=7),
    limit=3,
    categories=frozenset({"marketing"}),
)
SMS_DAILY = CapRule(
    name="sms-daily",
    scope="sms",
    window="calendar_day",
    limit=1,
    categories=frozenset({"marketing", "service"}),
)
PUSH_WEEKLY = CapRule(
    name="push-weekly",
    scope="push",
    window="calendar_week",
    limit=2,
    categories=frozenset({"marketing"}),
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def no_history(member_ids: Sequence[int], since: datetime) -> list[LedgerEntry]:
    return []


class FakeLedger:
    """A ledger of entries given by the test, remembering each query."""

    def __init__(self, entries: list[LedgerEntry] | None = None) -> None:
        self.entries = entries or []
        self.queries: list[tuple[list[int], datetime]] = []

    def __call__(self, member_ids: Sequence[int], since: datetime) -> list[LedgerEntry]:
        self.queries.append((list(member_ids), since))
        return [e for e in self.entries if e.member_id in member_ids and e.at >= since]

    def add(self, member_id: int, channel: str, category: str, delivery_id: int, at: str) -> None:
        self.entries.append(
            LedgerEntry(
                member_id=member_id,
                channel=channel,
                category=category,
                delivery_id=delivery_id,
                at=utc(at),
            )
        )


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _flush(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def _reserve(
    counter: CapCounter,
    delivery_id: int,
    at: str,
    *,
    member_id: int = 1,
    channel: str = "email",
    category: str = "marketing",
    time_zone: str | None = NY,
) -> Reservation | Capped:
    return counter.reserve(
        member_id,
        channel,
        category,
        now=utc(at),
        time_zone=time_zone,
        delivery_id=delivery_id,
    )


def test_a_rolling_window_counts_the_last_seven_days(client, redis_namespace):
    """Three in any seven days; the fourth is capped until the oldest leaves the window."""
    # Given a member with three marketing messages on three days
    counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=no_history)
    for n, day in enumerate(["01", "02", "03"], start=1):
        assert isinstance(_reserve(counter, n, f"2026-12-{day}T15:00"), Reservation)

    # When a fourth comes two days later
    capped = _reserve(counter, 4, "2026-12-05T15:00")

    # Then it is capped until the first is seven days old, and then it goes
    assert isinstance(capped, Capped)
    assert capped.rule == WEEKLY
    assert capped.count == 3
    assert capped.next_free_at == utc("2026-12-08T15:00")
    assert capped.detail == "frequency_cap: marketing-weekly 3/7d"
    assert capped.reason == "frequency_cap"
    assert isinstance(_reserve(counter, 4, "2026-12-08T14:59"), Capped)
    assert _reserve(counter, 4, "2026-12-08T15:00") == Reservation(
        member_id=1, delivery_id=4, rules=("marketing-weekly",)
    )
    nxt = _reserve(counter, 5, "2026-12-08T15:01")
    assert isinstance(nxt, Capped)
    assert nxt.next_free_at == utc("2026-12-09T15:00")


def test_a_calendar_day_is_the_members_own_day(client, redis_namespace):
    """23:30 and 00:30 on the member's clock are two days; in UTC the same instants are one."""
    counter = CapCounter(client, redis_namespace, [SMS_DAILY], ledger=no_history)

    # Given a New York member: 23:30 EST on 30 Nov, then 00:30 EST on 1 Dec
    late = _reserve(counter, 1, "2026-12-01T04:30", channel="sms")
    early = _reserve(counter, 2, "2026-12-01T05:30", channel="sms")
    # and a UTC member at the same two instants (both on 1 Dec in UTC)
    utc_first = _reserve(
        counter, 3, "2026-12-01T04:30", channel="sms", member_id=2, time_zone="UTC"
    )
    utc_second = _reserve(
        counter, 4, "2026-12-01T05:30", channel="sms", member_id=2, time_zone="UTC"
    )
    # When the New York member gets another at 10:00 EST on 1 Dec
    third = _reserve(counter, 5, "2026-12-01T15:00", channel="sms")

    # Then both New York sends went, the third waits for midnight in New York
    assert isinstance(late, Reservation)
    assert isinstance(early, Reservation)
    assert isinstance(utc_first, Reservation)
    assert isinstance(utc_second, Capped)
    assert utc_second.next_free_at == utc("2026-12-02T00:00")
    assert isinstance(third, Capped)
    assert third.next_free_at == utc("2026-12-02T05:00")
    assert third.detail == "frequency_cap: sms-daily 1/calendar_day"


@pytest.mark.parametrize(
    ("now", "zone", "next_free"),
    [
        ("2026-03-07T15:00", NY, "2026-03-08T05:00"),  # next midnight is still EST
        ("2026-03-08T15:00", NY, "2026-03-09T04:00"),  # the 8th has 23 hours
        ("2026-10-31T15:00", NY, "2026-11-01T04:00"),
        ("2026-11-01T15:00", NY, "2026-11-02T05:00"),  # the 1st has 25 hours
        ("2026-03-28T12:00", BERLIN, "2026-03-28T23:00"),
        ("2026-03-29T12:00", BERLIN, "2026-03-29T22:00"),
    ],
)
def test_a_capped_day_frees_at_the_members_next_midnight(
    client, redis_namespace, now: str, zone: str, next_free: str
):
    """next_free_at is the start of the member's next day, across DST changes."""
    counter = CapCounter(client, redis_namespace, [SMS_DAILY], ledger=no_history)
    _reserve(counter, 1, now, channel="sms", time_zone=zone)

    capped = _reserve(counter, 2, now, channel="sms", time_zone=zone)

    assert isinstance(capped, Capped)
    assert capped.next_free_at == utc(next_free)


def test_a_calendar_week_is_the_members_iso_week(client, redis_namespace):
    """Two pushes per Monday-to-Sunday week on the member's clock; Monday 00:00 frees it."""
    # Given a Berlin member, the week of 19-25 October 2026 (it ends with the fall back)
    counter = CapCounter(client, redis_namespace, [PUSH_WEEKLY], ledger=no_history)
    monday = _reserve(counter, 1, "2026-10-18T22:30", channel="push", time_zone=BERLIN)
    sunday = _reserve(counter, 2, "2026-10-25T12:00", channel="push", time_zone=BERLIN)

    # When a third comes at 23:30 on Sunday and a fourth at 00:30 on Monday
    late_sunday = _reserve(counter, 3, "2026-10-25T22:30", channel="push", time_zone=BERLIN)
    next_monday = _reserve(counter, 4, "2026-10-25T23:30", channel="push", time_zone=BERLIN)

    # Then the third waits for Monday 00:00 CET, and the fourth is in a new week
    assert isinstance(monday, Reservation)
    assert isinstance(sunday, Reservation)
    assert isinstance(late_sunday, Capped)
    assert late_sunday.next_free_at == utc("2026-10-25T23:00")
    assert late_sunday.detail == "frequency_cap: push-weekly 2/calendar_week"
    assert isinstance(next_monday, Reservation)


def test_scope_one_channel_or_all(client, redis_namespace):
    """A channel rule counts only its channel; an ``all`` rule counts every channel."""
    counter = CapCounter(client, redis_namespace, [WEEKLY, SMS_DAILY], ledger=no_history)
    at = "2026-12-01T15:00"

    sms = _reserve(counter, 1, at, channel="sms")
    sms_again = _reserve(counter, 2, at, channel="sms")
    email = _reserve(counter, 3, at, channel="email")
    push = _reserve(counter, 4, at, channel="push")
    email_again = _reserve(counter, 5, at, channel="email")

    assert sms == Reservation(member_id=1, delivery_id=1, rules=("marketing-weekly", "sms-daily"))
    assert isinstance(sms_again, Capped)
    assert sms_again.rule == SMS_DAILY
    assert email == Reservation(member_id=1, delivery_id=3, rules=("marketing-weekly",))
    assert isinstance(push, Reservation)
    assert isinstance(email_again, Capped)
    assert email_again.rule == WEEKLY
    assert email_again.next_free_at == utc("2026-12-08T15:00")


def test_when_two_rules_are_full_the_later_opening_is_reported(client, redis_namespace):
    """Capped names the rule that frees last: the first instant every rule could pass."""
    daily = CapRule(
        name="daily", scope="all", window="calendar_day", limit=1, categories=frozenset({"service"})
    )
    hourly = CapRule(
        name="hourly", scope="all", window=timedelta(hours=1), limit=1, categories=daily.categories
    )
    counter = CapCounter(client, redis_namespace, [hourly, daily], ledger=no_history)
    _reserve(counter, 1, "2026-12-01T15:00", category="service")

    capped = _reserve(counter, 2, "2026-12-01T15:10", category="service")

    assert isinstance(capped, Capped)
    assert capped.rule == daily
    assert capped.next_free_at == utc("2026-12-02T05:00")


def test_only_the_rules_categories_count(client, redis_namespace):
    """Service messages neither count against nor are stopped by a marketing rule."""
    counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=no_history)
    at = "2026-12-01T15:00"

    services = [_reserve(counter, n, at, category="service") for n in range(1, 6)]
    marketing = [_reserve(counter, n, at) for n in range(6, 9)]

    assert services == [Reservation(member_id=1, delivery_id=n, rules=()) for n in range(1, 6)]
    assert all(isinstance(r, Reservation) and r.rules for r in marketing)
    assert isinstance(_reserve(counter, 9, at), Capped)


def test_transactional_is_exempt_and_never_touches_redis(redis_namespace):
    """Transactional messages are reserved without a Redis round trip, even when it is down."""
    rules = [
        CapRule(
            name="everything",
            scope="all",
            window=timedelta(days=1),
            limit=1,
            categories=frozenset({"marketing", "service"}),
        )
    ]
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    counter = CapCounter(down, redis_namespace, rules, ledger=no_history)

    results = [_reserve(counter, n, "2026-12-01T15:00", category="transactional") for n in (1, 2)]

    assert results == [Reservation(member_id=1, delivery_id=n, rules=()) for n in (1, 2)]
    with pytest.raises(redis.ConnectionError):
        _reserve(counter, 3, "2026-12-01T15:00")  # a counted message never goes uncounted


def test_release_gives_the_slot_back(client, redis_namespace):
    """A permanent failure's slot is free again for the next message."""
    counter = CapCounter(client, redis_namespace, [WEEKLY, SMS_DAILY], ledger=no_history)
    at = "2026-12-01T15:00"
    _reserve(counter, 1, at, channel="sms")
    assert isinstance(_reserve(counter, 2, at, channel="sms"), Capped)

    counter.release(1, "sms", "marketing", delivery_id=1, now=utc(at), time_zone=NY)

    assert isinstance(_reserve(counter, 2, at, channel="sms"), Reservation)


def test_release_after_midnight_finds_yesterdays_slot(client, redis_namespace):
    """A slot taken at 23:50 and given back at 00:10 leaves the earlier day free."""
    counter = CapCounter(client, redis_namespace, [SMS_DAILY], ledger=no_history)
    _reserve(counter, 1, "2026-12-02T04:50", channel="sms")  # 23:50 EST on 1 Dec

    counter.release(1, "sms", "marketing", delivery_id=1, now=utc("2026-12-02T05:10"), time_zone=NY)

    assert isinstance(_reserve(counter, 2, "2026-12-02T04:55", channel="sms"), Reservation)


def test_the_same_delivery_takes_one_slot(client, redis_namespace):
    """Reserving again for a delivery that holds a slot (a retry) passes and counts once."""
    counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=no_history)
    at = "2026-12-01T15:00"

    again = [_reserve(counter, 1, at) for _ in range(5)]
    others = [_reserve(counter, n, at) for n in (2, 3, 4)]

    assert all(isinstance(r, Reservation) for r in again)
    assert [type(r) for r in others] == [Reservation, Reservation, Capped]


def test_a_batch_is_decided_in_order(client, redis_namespace):
    """reserve_many answers each request in order; one member's requests see each other."""
    counter = CapCounter(client, redis_namespace, [SMS_DAILY], ledger=no_history)
    requests = [
        CapRequest(member_id=m, channel="sms", category="marketing", delivery_id=d, time_zone=NY)
        for m, d in [(1, 1), (2, 2), (1, 3), (3, 4), (2, 5)]
    ] + [CapRequest(member_id=1, channel="email", category="marketing", delivery_id=6)]

    results = counter.reserve_many(requests, now=utc("2026-12-01T15:00"))

    assert [type(r).__name__ for r in results] == [
        "Reservation",
        "Reservation",
        "Capped",
        "Reservation",
        "Capped",
        "Reservation",
    ]
    assert [r.delivery_id for r in results] == [1, 2, 3, 4, 5, 6]


def test_a_batch_larger_than_one_script_call_keeps_its_order(client, redis_namespace):
    """Past PER_CALL requests the batch spans several script calls, still decided in order."""
    counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=FakeLedger())
    # Given one member's 4 requests straddling the boundary between two calls
    requests = [
        CapRequest(member_id=1000 + n, channel="email", category="marketing", delivery_id=n)
        for n in range(PER_CALL - 2)
    ] + [
        CapRequest(member_id=1, channel="email", category="marketing", delivery_id=10_000 + n)
        for n in range(4)
    ]

    results = counter.reserve_many(requests, now=utc("2026-12-01T15:00"))

    # Then each came back to its own request, and the member's fourth was capped
    assert [r.delivery_id for r in results] == [r.delivery_id for r in requests]
    assert [type(r) for r in results[-4:]] == [Reservation, Reservation, Reservation, Capped]
    assert all(isinstance(r, Reservation) for r in results[:-4])


def test_prepare_rebuilds_only_the_members_without_counters_in_one_ledger_read(
    client, redis_namespace
):
    ledger = FakeLedger()
    ledger.add(2, "email", "marketing", 7, "2026-11-30T15:00")
    counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=ledger)
    now = utc("2026-12-01T15:00")
    # Given member 1 with counters (rebuilt on a first reserve), members 2 and 3 without
    _reserve(counter, 1, "2026-12-01T14:00")
    ledger.queries.clear()

    # When a deliver batch for all three is prepared
    rebuilt = counter.prepare({1: NY, 2: NY, 3: None}, now=now)

    # Then 2 and 3 were rebuilt with one ledger read, and 2's send counts
    assert (rebuilt, [ids for ids, _ in ledger.queries]) == (2, [[2, 3]])
    results = counter.reserve_many(
        [
            CapRequest(member_id=2, channel="email", category="marketing", delivery_id=d)
            for d in (8, 9, 10)
        ],
        now=now,
    )
    assert [type(r) for r in results] == [Reservation, Reservation, Capped]
    assert len(ledger.queries) == 1  # the reserve found every marker
    # And a second prepare finds every marker with one EXISTS and rebuilds nothing
    assert counter.prepare({1: NY, 2: NY, 3: None}, now=now) == 0
    assert len(ledger.queries) == 1


def test_lost_counters_are_rebuilt_from_the_ledger_before_they_are_trusted(client, redis_namespace):
    """After Redis loses the keys, the member's sends are read back and the cap still holds."""
    # Given three sends in the ledger and in Redis
    ledger = FakeLedger()
    counter = CapCounter(client, redis_namespace, [WEEKLY, SMS_DAILY], ledger=ledger)
    for n, at in enumerate(["2026-11-28T15:00", "2026-11-30T15:00", "2026-12-01T14:00"], 1):
        assert isinstance(_reserve(counter, n, at, channel="sms"), Reservation)
        ledger.add(1, "sms", "marketing", n, at)
    assert len(ledger.queries) == 1  # the first reserve found no counters and read the ledger
    # and an older send, outside the window
    ledger.add(1, "email", "marketing", 99, "2026-11-20T15:00")

    # When Redis loses everything and another message comes
    _flush(client, redis_namespace)
    capped = _reserve(counter, 4, "2026-12-01T15:00", channel="email")
    sms = _reserve(counter, 5, "2026-12-01T15:00", channel="sms")

    # Then the ledger was read for that member and the cap held, with the right opening
    assert len(ledger.queries) == 2
    assert ledger.queries[1] == ([1], utc("2026-11-24T15:00"))
    assert isinstance(capped, Capped)
    assert capped.rule == WEEKLY
    assert capped.next_free_at == utc("2026-12-05T15:00")
    assert isinstance(sms, Capped)  # sms-daily: one today already (in the member's zone)
    # and a later reserve trusts the rebuilt counters without reading the ledger again
    assert isinstance(_reserve(counter, 6, "2026-12-05T15:00"), Reservation)
    assert len(ledger.queries) == 2


def test_a_rebuild_counts_only_the_current_calendar_day(client, redis_namespace):
    """Yesterday's send (in the member's zone) does not use today's daily slot."""
    ledger = FakeLedger()
    ledger.add(1, "sms", "service", 1, "2026-12-01T04:30")  # 23:30 EST on 30 Nov
    counter = CapCounter(client, redis_namespace, [SMS_DAILY], ledger=ledger)

    today = _reserve(counter, 2, "2026-12-01T05:30", channel="sms")
    again = _reserve(counter, 3, "2026-12-01T06:00", channel="sms")

    assert isinstance(today, Reservation)
    assert isinstance(again, Capped)


def test_a_rebuild_over_the_limit_frees_when_enough_have_left(client, redis_namespace):
    """Four in the window for a limit of three: the next slot frees when two have left."""
    ledger = FakeLedger()
    for n, day in enumerate(["01", "02", "03", "04"], start=1):
        ledger.add(1, "push", "marketing", n, f"2026-12-{day}T10:00")
    counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=ledger)

    capped = _reserve(counter, 5, "2026-12-05T10:00", channel="push")

    assert isinstance(capped, Capped)
    assert capped.count == 4
    assert capped.next_free_at == utc("2026-12-09T10:00")


def test_changing_a_rule_rebuilds_its_counters(client, redis_namespace):
    """A rule whose window changes starts from the ledger, not from the old window's counts."""
    ledger = FakeLedger()
    short = CapRule(
        name="marketing",
        scope="all",
        window=timedelta(days=1),
        limit=1,
        categories=WEEKLY.categories,
    )
    counter = CapCounter(client, redis_namespace, [short], ledger=ledger)
    assert isinstance(_reserve(counter, 1, "2026-12-01T10:00"), Reservation)
    ledger.add(1, "email", "marketing", 1, "2026-12-01T10:00")
    assert isinstance(_reserve(counter, 2, "2026-12-02T11:00"), Reservation)
    ledger.add(1, "email", "marketing", 2, "2026-12-02T11:00")

    longer = CapRule(
        name="marketing",
        scope="all",
        window=timedelta(days=7),
        limit=2,
        categories=WEEKLY.categories,
    )
    capped = _reserve(
        CapCounter(client, redis_namespace, [longer], ledger=ledger), 3, "2026-12-03T12:00"
    )

    assert isinstance(capped, Capped)
    assert capped.count == 2
    assert len(ledger.queries) == 2


@pytest.mark.parametrize("rebuild", [False, True], ids=["counters-present", "counters-lost"])
def test_eight_workers_at_once_never_pass_the_limit(redis_url, redis_namespace, rebuild):
    """Eight threads, each with its own connection, race for three slots: exactly three win."""
    # Given eight workers, each with its own Redis connection and counter
    setup = redis.Redis.from_url(redis_url)
    if not rebuild:
        assert isinstance(
            _reserve(
                CapCounter(setup, redis_namespace, [WEEKLY], ledger=no_history),
                100,
                "2026-11-20T10:00",
            ),
            Reservation,
        )  # warms the marker; an old send, out of the window
    setup.close()
    barrier = threading.Barrier(8)
    results: list[Reservation | Capped] = []
    lock = threading.Lock()

    def worker(delivery_id: int) -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            counter = CapCounter(client, redis_namespace, [WEEKLY], ledger=no_history)
            barrier.wait()
            # When they all reserve for the same member at once
            result = _reserve(counter, delivery_id, "2026-12-01T15:00")
            with lock:
                results.append(result)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then exactly three get a slot and five are capped
    assert len(results) == 8
    assert sum(isinstance(r, Reservation) for r in results) == 3
    assert sum(isinstance(r, Capped) for r in results) == 5


def _seed(engine: Engine) -> tuple[int, int]:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        member = add_member(session)
        other = add_member(session)
        campaign = Campaign(name="winter", kind="broadcast", category="marketing")
        session.add(campaign)
        session.flush()
        version = CampaignVersion(
            campaign_id=campaign.id, version=1, spec={}, templates={}, source="", digest="0" * 64
        )
        session.add(version)
        session.flush()
        rows = [
            # (member, status, channel, sent_at, updated_at)
            (member.id, "sent", "sms", "2026-11-30T15:00", "2026-11-30T15:01"),
            (member.id, "delivered", "email", "2026-12-01T09:00", "2026-12-01T12:00"),
            (member.id, "sending", "push", None, "2026-12-01T14:00"),
            (member.id, "unknown", "sms", None, "2026-12-01T14:30"),
            (member.id, "failed", "sms", None, "2026-12-01T14:40"),
            (member.id, "suppressed", None, None, "2026-12-01T14:45"),
            (member.id, "pending", None, None, "2026-12-01T14:50"),
            (member.id, "sent", "email", "2026-11-01T15:00", "2026-11-01T15:00"),  # too old
            (other.id, "sent", "sms", "2026-12-01T10:00", "2026-12-01T10:00"),
        ]
        for n, (member_id, status, channel, sent_at, updated_at) in enumerate(rows):
            session.add(
                Delivery(
                    dedupe_key=f"k{n}",
                    campaign_id=campaign.id,
                    campaign_version_id=version.id,
                    member_id=member_id,
                    category="marketing",
                    channels="sms,email,push",
                    channel=channel,
                    status=status,
                    sent_at=utc(sent_at) if sent_at else None,
                    created_at=utc("2026-11-01T00:00"),
                    updated_at=utc(updated_at),
                )
            )
        return member.id, other.id


def test_the_ledger_query_reads_counted_deliveries(engine: Engine):
    """Sending, sent, delivered and unknown rows count, at sent_at else updated_at."""
    member_id, _ = _seed(engine)
    sessions = make_sessionmaker(engine)

    with sessions() as session:
        entries = recent_deliveries(session, [member_id], utc("2026-11-24T15:00"))

    assert sorted((e.channel, e.at, e.category) for e in entries) == [
        ("email", utc("2026-12-01T09:00"), "marketing"),
        ("push", utc("2026-12-01T14:00"), "marketing"),
        ("sms", utc("2026-11-30T15:00"), "marketing"),
        ("sms", utc("2026-12-01T14:30"), "marketing"),
    ]
    assert {e.member_id for e in entries} == {member_id}


def test_a_flushed_counter_rebuilds_from_the_database(engine: Engine, client, redis_namespace):
    """End to end: four counted rows in the store; after a flush, the fifth send is capped."""
    member_id, other_id = _seed(engine)
    rule = CapRule(
        name="weekly", scope="all", window=timedelta(days=7), limit=4, categories=WEEKLY.categories
    )
    counter = CapCounter(
        client, redis_namespace, [rule], ledger=ledger_from(make_sessionmaker(engine))
    )
    _flush(client, redis_namespace)

    mine = _reserve(counter, 1000, "2026-12-01T15:00", member_id=member_id)
    theirs = _reserve(counter, 1001, "2026-12-01T15:00", member_id=other_id)

    assert isinstance(mine, Capped)
    assert mine.count == 4
    assert mine.next_free_at == utc("2026-12-07T15:00")
    assert isinstance(theirs, Reservation)


def test_prepare_caps_leaves_redis_alone_for_messages_no_rule_counts(client, redis_namespace):
    """A transactional message never touches Redis, so a batch of them prepares nothing."""
    from types import SimpleNamespace

    from channels import Message
    from workers.capping import prepare_caps

    ledger = FakeLedger()
    counter = CapCounter(client, redis_namespace, [WEEKLY, SMS_DAILY], ledger=ledger)

    def message(member_id: int, channel: str, category: str) -> Message:
        return Message(
            delivery_id=member_id,
            dedupe_key=f"k{member_id}",
            member_id=member_id,
            channel=channel,
            to="+15555550100",
            parts={"text": "hi"},
            category=category,
            campaign="c",
            metadata={"time_zone": NY},
        )

    runtime: Any = SimpleNamespace(caps=counter)
    now = utc("2026-12-01T15:00")
    prepare_caps(runtime, [message(1, "sms", "transactional"), message(2, "push", "service")], now)
    assert ledger.queries == []
    assert not list(client.scan_iter(match=f"{redis_namespace}*"))
    # while a counted one is prepared (its member's counters rebuilt)
    prepare_caps(runtime, [message(3, "sms", "marketing")], now)
    assert [ids for ids, _ in ledger.queries] == [[3]]
    assert counter.counts("sms", "marketing")
    assert not counter.counts("sms", "transactional")
