"""Expiry deadlines on real engines: local expiry dates, sums, windows, reminders, streaming.

Every test using ``engine`` runs on SQLite and on PostgreSQL. Members are
written with explicit ids so that expected rows can be spelled out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from segments.expiry import (
    DueReminder,
    ExpiringPoints,
    due_reminders,
    expiry_candidates,
    iter_expiring,
)
from store import Member, PointLot, make_engine

EARNED = datetime(2025, 12, 1, tzinfo=UTC)
DEC_3 = date(2026, 12, 3)


def at(iso: str) -> datetime:
    """An instant written in ISO-8601 with an offset or ``Z``."""
    return datetime.fromisoformat(iso)


def seed(
    engine: Engine,
    members: Mapping[int, str | None],
    lots: list[tuple[int, str, int, int]],
    deleted: frozenset[int] = frozenset(),
) -> None:
    """Write members ``{id: time zone}`` and lots ``(member_id, expires_at, points, redeemed)``."""
    member_rows = [
        {
            "id": member_id,
            "external_id": f"M{member_id}",
            "time_zone": zone,
            "deleted_at": EARNED if member_id in deleted else None,
        }
        for member_id, zone in members.items()
    ]
    lot_rows = [
        {
            "member_id": member_id,
            "expires_at": at(expires_at),
            "points": points,
            "redeemed": redeemed,
            "earned_at": EARNED,
        }
        for member_id, expires_at, points, redeemed in lots
    ]
    with engine.begin() as conn:
        conn.execute(insert(Member), member_rows)
        if lot_rows:
            conn.execute(insert(PointLot), lot_rows)


def expiring(engine: Engine, start: date, end: date, **options: Any) -> list[tuple[int, date, int]]:
    """``(member_id, expiry_date, points)`` as :func:`iter_expiring` streams them."""
    with Session(engine) as session:
        return [
            (row.member_id, row.expiry_date, row.points)
            for row in iter_expiring(session, start, end, **options)
        ]


def reminders(engine: Engine, today: date, **options: Any) -> list[DueReminder]:
    """The reminders due on ``today`` for leads 30, 7 and 1."""
    with Session(engine) as session:
        return list(due_reminders(session, today, [30, 7, 1], **options))


def test_points_are_summed_per_member_and_local_date_net_of_redeemed(engine: Engine) -> None:
    """Lots on one local date are summed net of redeemed points; spent lots count for nothing."""
    # Given a member with three lots on 3 Dec (one fully redeemed), one on 4 Dec,
    # and a member whose only lot is fully redeemed
    seed(
        engine,
        {1: "UTC", 2: "UTC"},
        [
            (1, "2026-12-03T00:00:00Z", 40, 40),
            (1, "2026-12-03T06:00:00Z", 100, 30),
            (1, "2026-12-03T18:00:00Z", 50, 0),
            (1, "2026-12-04T12:00:00Z", 10, 0),
            (2, "2026-12-03T12:00:00Z", 80, 80),
        ],
    )
    # When the deadlines of 1 to 5 Dec are read
    with Session(engine) as session:
        rows = list(iter_expiring(session, date(2026, 12, 1), date(2026, 12, 5)))
    # Then each date has the remaining points, and the deadline of its first lot with any left
    assert rows == [
        ExpiringPoints(
            member_id=1, expiry_date=DEC_3, points=120, expires_at=at("2026-12-03T06:00:00Z")
        ),
        ExpiringPoints(
            member_id=1,
            expiry_date=date(2026, 12, 4),
            points=10,
            expires_at=at("2026-12-04T12:00:00Z"),
        ),
    ]


def test_min_points_applies_to_the_sum_of_a_date(engine: Engine) -> None:
    """``min_points`` keeps a (member, date) whose lots reach it together, and drops the rest."""
    # Given 30 + 30 points, exactly 50 points, and 49 points expiring on 3 Dec
    seed(
        engine,
        {1: "UTC", 2: "UTC", 3: "UTC"},
        [
            (1, "2026-12-03T01:00:00Z", 30, 0),
            (1, "2026-12-03T02:00:00Z", 30, 0),
            (2, "2026-12-03T01:00:00Z", 60, 10),
            (3, "2026-12-03T01:00:00Z", 49, 0),
        ],
    )
    # When the deadlines are read with min_points=50
    rows = expiring(engine, DEC_3, DEC_3, min_points=50)
    # Then the 49 points are left out
    assert rows == [(1, DEC_3, 60), (2, DEC_3, 50)]


def test_deleted_members_are_left_out(engine: Engine) -> None:
    """A deleted member's points are no deadline to remind of."""
    # Given two members with points expiring on 3 Dec, the second deleted
    seed(
        engine,
        {1: "UTC", 2: "UTC"},
        [(1, "2026-12-03T12:00:00Z", 100, 0), (2, "2026-12-03T12:00:00Z", 100, 0)],
        deleted=frozenset({2}),
    )
    # When the deadlines are read
    rows = expiring(engine, DEC_3, DEC_3)
    # Then only the first member has one
    assert rows == [(1, DEC_3, 100)]


def test_the_expiry_date_is_the_local_date_in_the_members_zone(engine: Engine) -> None:
    """2026-12-03T03:00Z is 2 Dec in New York and 3 Dec in Berlin; no zone means the default."""
    # Given the same instant for members in New York, Berlin, no zone and an unknown zone
    seed(
        engine,
        {1: "America/New_York", 2: "Europe/Berlin", 3: None, 4: "Mars/Olympus"},
        [(member_id, "2026-12-03T03:00:00Z", 120, 0) for member_id in (1, 2, 3, 4)],
    )
    window = (date(2026, 12, 1), date(2026, 12, 5))
    # When the deadlines are read with UTC, then New York, as the default zone
    in_utc = expiring(engine, *window)
    in_new_york = expiring(engine, *window, default_time_zone="America/New_York")
    # Then New York has 2 Dec, Berlin 3 Dec, and the others the default zone's date
    dec_2 = date(2026, 12, 2)
    assert in_utc == [(1, dec_2, 120), (2, DEC_3, 120), (3, DEC_3, 120), (4, DEC_3, 120)]
    assert in_new_york == [(1, dec_2, 120), (2, DEC_3, 120), (3, dec_2, 120), (4, dec_2, 120)]


def test_the_window_is_inclusive_in_every_zone_and_ordered_by_member(engine: Engine) -> None:
    """Local dates ``start`` and ``end`` are in, the days around them out, at UTC+14 and -12 too."""
    # Given, for 3..5 Dec, lots just inside and just outside the window in three zones,
    # members written out of id order
    seed(
        engine,
        {30: "Etc/GMT+12", 10: "Pacific/Kiritimati", 20: "UTC"},
        [
            (10, "2026-12-02T09:59:59+00:00", 1, 0),  # 2 Dec 23:59:59 at UTC+14
            (10, "2026-12-02T10:00:00+00:00", 2, 0),  # 3 Dec 00:00 at UTC+14
            (10, "2026-12-05T09:59:59+00:00", 4, 0),  # 5 Dec 23:59:59 at UTC+14
            (10, "2026-12-05T10:00:00+00:00", 8, 0),  # 6 Dec 00:00 at UTC+14
            (20, "2026-12-02T23:59:59.999999+00:00", 1, 0),
            (20, "2026-12-03T00:00:00+00:00", 2, 0),
            (20, "2026-12-05T23:59:59.999999+00:00", 4, 0),
            (20, "2026-12-06T00:00:00+00:00", 8, 0),
            (30, "2026-12-03T11:59:59+00:00", 1, 0),  # 2 Dec 23:59:59 at UTC-12
            (30, "2026-12-03T12:00:00+00:00", 2, 0),  # 3 Dec 00:00 at UTC-12
            (30, "2026-12-06T11:59:59+00:00", 4, 0),  # 5 Dec 23:59:59 at UTC-12
            (30, "2026-12-06T12:00:00+00:00", 8, 0),  # 6 Dec 00:00 at UTC-12
        ],
    )
    # When the deadlines of 3 to 5 Dec are read
    rows = expiring(engine, DEC_3, date(2026, 12, 5))
    # Then each member has its first and last day, in member order
    dec_5 = date(2026, 12, 5)
    assert rows == [
        (10, DEC_3, 2),
        (10, dec_5, 4),
        (20, DEC_3, 2),
        (20, dec_5, 4),
        (30, DEC_3, 2),
        (30, dec_5, 4),
    ]


def test_reminders_are_due_on_the_lead_days_only(engine: Engine) -> None:
    """Leads 30, 7, 1: a reminder 30, 7 and 1 days before, none on other days or after."""
    # Given 120 points expiring on 3 Dec
    seed(engine, {1: "Europe/Berlin"}, [(1, "2026-12-03T12:00:00Z", 120, 0)])
    # When the reminders are asked for every day from 40 days before to 3 days after
    days = [DEC_3 + timedelta(days=n) for n in range(-40, 4)]
    due = {today: reminders(engine, today) for today in days}
    # Then exactly three days have one, each with its lead and the deadline
    assert {today: [r.lead_days for r in found] for today, found in due.items() if found} == {
        date(2026, 11, 3): [30],
        date(2026, 11, 26): [7],
        date(2026, 12, 2): [1],
    }
    assert due[date(2026, 11, 26)] == [
        DueReminder(
            member_id=1,
            expiry_date=DEC_3,
            lead_days=7,
            points=120,
            expires_at=at("2026-12-03T12:00:00Z"),
        )
    ]


def test_catch_up_gives_the_most_urgent_reminder_whose_day_has_come(engine: Engine) -> None:
    """Catch-up: the smallest lead >= the days left, from 30 days before until the day before."""
    # Given 120 points expiring on 3 Dec
    seed(engine, {1: "UTC"}, [(1, "2026-12-03T12:00:00Z", 120, 0)])
    # When catch-up reminders are asked for every day from 40 days before to 3 days after
    found = {}
    for n in range(-3, 41):
        due = reminders(engine, DEC_3 - timedelta(days=n), catch_up=True)
        found[n] = [r.lead_days for r in due]
    # Then 30..8 days left give the 30-day reminder, 7..2 the 7-day one, 1 the 1-day one
    expected = {n: [30] if n >= 8 else [7] if n >= 2 else [1] for n in range(1, 31)}
    assert {n: leads for n, leads in found.items() if leads} == expected


def test_catch_up_after_an_outage_sends_one_reminder_per_deadline(engine: Engine) -> None:
    """Back after three weeks, 5 days before a deadline: the 7-day reminder, not the 30-day one."""
    # Given a member's deadlines 5, 22 and 63 days away, and one that is today
    today = date(2026, 11, 28)
    seed(
        engine,
        {1: "UTC"},
        [
            (1, "2026-11-28T18:00:00Z", 10, 0),
            (1, "2026-12-03T12:00:00Z", 120, 0),
            (1, "2026-12-20T12:00:00Z", 60, 0),
            (1, "2027-01-30T12:00:00Z", 90, 0),
        ],
    )
    # When the reminders for today are asked for, with and without catch-up
    caught_up = reminders(engine, today, catch_up=True)
    on_time = reminders(engine, today)
    # Then catch-up gives the 7-day one for 3 Dec and the 30-day one for 20 Dec, and
    # nothing is due on time today
    assert [(r.expiry_date, r.lead_days, r.points) for r in caught_up] == [
        (DEC_3, 7, 120),
        (date(2026, 12, 20), 30, 60),
    ]
    assert on_time == []


def test_reminders_follow_the_members_local_date(engine: Engine) -> None:
    """The 1-day reminder of a lot at 2026-12-03T03:00Z is due on 1 Dec in New York."""
    # Given that lot for a member in New York (2 Dec locally) and one in Berlin (3 Dec)
    seed(
        engine,
        {1: "America/New_York", 2: "Europe/Berlin"},
        [(1, "2026-12-03T03:00:00Z", 120, 0), (2, "2026-12-03T03:00:00Z", 120, 0)],
    )
    # When the reminders of 1 and 2 Dec are asked for
    dec_1 = [(r.member_id, r.lead_days) for r in reminders(engine, date(2026, 12, 1))]
    dec_2 = [(r.member_id, r.lead_days) for r in reminders(engine, date(2026, 12, 2))]
    # Then each member gets it the day before their own local date
    assert (dec_1, dec_2) == ([(1, 1)], [(2, 1)])


def test_many_lots_stream_in_small_batches_in_member_order(engine: Engine) -> None:
    """A few thousand lots come through a small ``batch`` complete and in member order."""
    # Given 1,500 members with two lots each, on 3 and 4 Dec
    members = {member_id: "Europe/Berlin" for member_id in range(1, 1501)}
    lots = [
        (member_id, expires_at, member_id % 7 + 1, 0)
        for member_id in members
        for expires_at in ("2026-12-03T12:00:00Z", "2026-12-04T12:00:00Z")
    ]
    seed(engine, members, lots)
    # When they are streamed 100 rows at a time
    rows = expiring(engine, DEC_3, date(2026, 12, 4), batch=100)
    # Then every (member, date) is there once, in order
    expected = [
        (member_id, day, member_id % 7 + 1)
        for member_id in members
        for day in (DEC_3, date(2026, 12, 4))
    ]
    assert rows == expected


def test_local_dates_are_right_across_a_daylight_saving_change(engine: Engine) -> None:
    """In a window holding a DST change, each instant gets the date a zone conversion gives.

    Zones with one UTC offset over the scan take a shortcut (instant + offset);
    New York changes on 1 Nov 2026 and Sydney on 4 Oct 2026, so they must not.
    """
    # Given members in zones with and without a change, with lots every 5 h 17 min
    zones = {1: "America/New_York", 2: "Australia/Sydney", 3: "Asia/Kolkata", 4: None}
    first = datetime(2026, 9, 25, tzinfo=UTC)
    instants = [first + timedelta(minutes=317 * n) for n in range(200)]
    seed(
        engine,
        zones,
        [(member_id, t.isoformat(), 1, 0) for member_id in zones for t in instants],
    )
    # When the deadlines of 28 Sep to 4 Nov are read
    start, end = date(2026, 9, 28), date(2026, 11, 4)
    rows = expiring(engine, start, end)
    # Then each date counts the lots whose local date it is, by zoneinfo's conversion
    expected = []
    for member_id, name in zones.items():
        days = [t.astimezone(ZoneInfo(name or "UTC")).date() for t in instants]
        expected += [(member_id, d, days.count(d)) for d in sorted(set(days)) if start <= d <= end]
    assert rows == expected


@pytest.mark.postgres
def test_postgresql_streams_from_a_server_side_cursor(pg_url: str) -> None:
    """On PostgreSQL the rows come from a cursor declared on the server, not a full fetch."""
    engine = make_engine(pg_url)
    try:
        # Given 3,000 lots
        seed(
            engine,
            dict.fromkeys(range(1, 3001), "UTC"),
            [(member_id, "2026-12-03T12:00:00Z", 10, 0) for member_id in range(1, 3001)],
        )
        with Session(engine) as session:
            # When the first deadline has been read, 100 rows at a time
            rows = iter_expiring(session, DEC_3, DEC_3, batch=100)
            first = next(rows)
            open_cursors = session.scalar(text("SELECT count(*) FROM pg_cursors"))
            rest = sum(1 for _ in rows)
            after = session.scalar(text("SELECT count(*) FROM pg_cursors"))
        # Then a server-side cursor was open meanwhile, and closed once exhausted
        assert (first.member_id, open_cursors, rest, after) == (1, 1, 2999, 0)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_reads_lots_through_the_expiry_index(pg_url: str) -> None:
    """The candidates query finds lots by a range on ``expires_at``'s index, not a table scan.

    The plan is checked as a server-side cursor plans it (``DECLARE``), whose
    fast-start bias once chose to walk the ``member_id`` index over every lot.
    """
    engine = make_engine(pg_url)
    try:
        # Given 2,000 members with 10 lots each spread over a year, analyzed
        start = datetime(2026, 6, 1, tzinfo=UTC)
        seed(
            engine,
            dict.fromkeys(range(1, 2001), "UTC"),
            [
                (
                    member_id,
                    (start + timedelta(hours=(member_id * 37 + n * 877) % 8760)).isoformat(),
                    10,
                    0,
                )
                for member_id in range(1, 2001)
                for n in range(10)
            ],
        )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE members")
            conn.exec_driver_sql("ANALYZE point_lots")
        # When the plan of one day's candidates is explained
        compiled = expiry_candidates(DEC_3, DEC_3).compile(dialect=engine.dialect)
        with engine.connect() as conn:
            plan = "\n".join(
                conn.exec_driver_sql(
                    f"EXPLAIN DECLARE c CURSOR FOR {compiled.string}", dict(compiled.params)
                ).scalars()
            )
        # Then point_lots is read through the expires_at index
        assert "ix_point_lots_expires_at_member_id" in plan, plan
        assert "Seq Scan on point_lots" not in plan, plan
        assert "ix_point_lots_member_id" not in plan, plan
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: iter_expiring(s, DEC_3, DEC_3 - timedelta(days=1)), "ends"),
        (lambda s: iter_expiring(s, DEC_3, DEC_3, default_time_zone="Mars/Olympus"), "IANA"),
        (lambda s: iter_expiring(s, DEC_3, DEC_3, batch=0), "batch"),
        (lambda s: due_reminders(s, DEC_3, []), "lead_days"),
        (lambda s: due_reminders(s, DEC_3, [7, 0]), "lead_days"),
        (lambda s: due_reminders(s, DEC_3, [True]), "lead_days"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    call: Any,
    message: str,
) -> None:
    """A reversed window, an unknown default zone, a batch or leads below 1 raise at once."""
    # Given a session that is never used
    with Session() as session, pytest.raises(ValueError, match=message):
        # When the call is made (not iterated): Then it raises
        call(session)
