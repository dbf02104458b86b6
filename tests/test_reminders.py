"""Expiry reminders end to end: the day's run, planning, the send-time recheck, direct mail, caps.

Every test using ``database_url`` runs on SQLite and on PostgreSQL. Time is
the store's settable clock (:func:`store.set_clock`), so a month of reminders
runs in a second; members are in UTC unless a test is about zones.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from scheduler import claim_due_runs, tick
from store import CampaignRun, Delivery, DeliveryStatus, PointLot, RunStatus, set_clock, utcnow
from templates import CHANNEL_PARTS, Renderer, load_templates
from workers.delivery import deliver_batch
from workers.occurrences import ensure_runs
from workers.planning import plan_run
from workers.program import CapRule, Program, parse_program
from workers.reminder_dates import drop_date, planning_horizon

from .support import add_member, create, runtime_for, scripted_channels, sessions_for
from .test_cli import _run
from .test_pipeline import _job_args

MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ADDRESS = {
    "address_line1": "Hauptstr. 1",
    "address_city": "Berlin",
    "address_zip": "10115",
    "address_country": "DE",
}


class Clock:
    """The store's clock, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    fixed = Clock(MONDAY)
    previous = set_clock(fixed)
    yield fixed
    set_clock(previous)


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def reminder_file(
    tmp_path: Path,
    *,
    name: str = "points-expiry",
    channels: str = "[email]",
    min_points: int = 50,
    lead_days: str = "[30, 7, 1]",
    extra: str = "",
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            kind: expiry_reminder
            category: service
            lead_days: {lead_days}
            min_points: {min_points}
            channels: {channels}
            template: points-expiry
            """
        )
        + textwrap.dedent(extra)
    )
    return path


def add_lot(sessions: Any, member_id: int, expires_at: str, points: int, redeemed: int = 0) -> int:
    with sessions.begin() as s:
        lot = PointLot(
            member_id=member_id,
            points=points,
            redeemed=redeemed,
            earned_at=at("2026-01-01T00:00Z"),
            expires_at=at(expires_at),
        )
        s.add(lot)
        s.flush()
        return lot.id


def redeem(sessions: Any, lot_id: int, redeemed: int) -> None:
    with sessions.begin() as s:
        s.execute(update(PointLot).where(PointLot.id == lot_id).values(redeemed=redeemed))


def rows(sessions: Any) -> list[Delivery]:
    with sessions() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.member_id, Delivery.dedupe_key)))


def runs(sessions: Any) -> list[CampaignRun]:
    with sessions() as s:
        return list(s.scalars(select(CampaignRun).order_by(CampaignRun.id)))


def plan_today(rt: Any, sessions: Any) -> list[int]:
    """What the scheduler's tick and the plan jobs do: today's run, claimed and planned."""
    ensure_runs(sessions, utcnow())
    claimed = claim_due_runs(sessions)
    for run_id in claimed:
        plan_run(rt, run_id)
    return claimed


def deliver_open(rt: Any, sessions: Any) -> None:
    open_ids = [r.id for r in rows(sessions) if DeliveryStatus(r.status).is_open]
    if open_ids:
        deliver_batch(rt, open_ids)


def day(rt: Any, sessions: Any, clock: Clock, now: datetime) -> None:
    """One day of the program at ``now``: plan today's run, then deliver what is open."""
    clock.now = now
    plan_today(rt, sessions)
    deliver_open(rt, sessions)


def keys(sessions: Any) -> list[str]:
    return [r.dedupe_key for r in rows(sessions)]


# -- the day's run ---------------------------------------------------------------------


def test_the_tick_writes_one_run_per_campaign_per_day(database_url, tmp_path, clock):
    """Two ticks on a day write one run; a later day its own, named by the program's date."""
    # Given an expiry-reminder campaign
    sessions = sessions_for(database_url)
    create(sessions, reminder_file(tmp_path))
    # When the scheduler ticks twice on Monday
    first, second = ensure_runs(sessions, utcnow()), ensure_runs(sessions, utcnow())
    # Then one run is written for that day, due at once
    assert (first, second) == (1, 0)
    [run] = runs(sessions)
    assert (run.occurrence, run.due_at, run.status) == ("2026-11-30", MONDAY, RunStatus.SCHEDULED)
    # When it ticks on Tuesday in a program whose time zone is already on Wednesday
    kiritimati = parse_program("default_time_zone: Pacific/Kiritimati\n")  # UTC+14
    clock.now = at("2026-12-01T11:00Z")
    ensure_runs(sessions, utcnow(), kiritimati)
    # Then the new run is named by the program's date
    assert [r.occurrence for r in runs(sessions)] == ["2026-11-30", "2026-12-02"]


def test_the_tick_enqueues_the_plan_and_the_plan_one_deliver_job_per_chunk(
    database_url, tmp_path, clock
):
    """The scheduler's tick claims the day's run; its plan enqueues each chunk's new rows."""
    # Given three members with points expiring in 7 days, chunks of two rows and a broker
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        members = [add_member(s, time_zone="UTC").id for _ in range(3)]
    for member in members:
        add_lot(sessions, member, "2026-12-07T12:00Z", 100)
    create(sessions, reminder_file(tmp_path))
    broker = StubBroker()
    broker.declare_queue("plan")
    broker.declare_queue("deliver")
    rt = runtime_for(database_url, tmp_path, broker=broker, batch_size=2)
    # When the scheduler ticks and the plan job runs
    [run_id] = tick(sessions, broker)
    assert _job_args(broker, "plan") == [run_id]
    plan_run(rt, run_id)
    # Then one deliver job per chunk names that chunk's rows
    ids = [r.id for r in sorted(rows(sessions), key=lambda r: r.id)]
    assert _job_args(broker, "deliver") == [ids[:2], ids[2:]]


def test_campaigns_create_says_the_scheduler_writes_the_runs(tmp_path):
    """`loyalcast campaigns create` takes a reminder campaign and says where its runs come from."""
    result = _run(tmp_path, "campaigns", "create", str(reminder_file(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "campaign points-expiry created (version 1); the scheduler writes its runs" in (
        " ".join(result.stdout.split())
    )


# -- planning --------------------------------------------------------------------------


def test_planning_writes_one_row_per_member_date_and_lead_and_replanning_writes_nothing(
    database_url, tmp_path, clock
):
    """Lots of one local date are summed into one row; a second plan of the run adds no row."""
    # Given a member with two lots expiring on 7 Dec (7 days away), one with a lot in 30
    # days, one whose points expire in 45 days, and one whose points are all redeemed
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        a, b, c, d = (add_member(s, time_zone="UTC").id for _ in range(4))
    add_lot(sessions, a, "2026-12-07T08:00Z", 100)
    add_lot(sessions, a, "2026-12-07T20:00Z", 60, redeemed=10)
    add_lot(sessions, b, "2026-12-30T12:00Z", 80)
    add_lot(sessions, c, "2027-01-14T12:00Z", 500)
    add_lot(sessions, d, "2026-12-07T12:00Z", 500, redeemed=500)
    campaign = create(sessions, reminder_file(tmp_path)).campaign_id
    rt = runtime_for(database_url, tmp_path, channels=scripted_channels())
    # When Monday's run is planned
    [run_id] = plan_today(rt, sessions)
    # Then a has the 7-day reminder for 150 points and b the 30-day one, nothing else
    planned = rows(sessions)
    assert [r.dedupe_key for r in planned] == [
        f"expiry:{campaign}:{a}:2026-12-07:7",
        f"expiry:{campaign}:{b}:2026-12-30:30",
    ]
    assert planned[0].payload == {
        "points": 150,
        "expiry_date": "2026-12-07",
        "expires_at": "2026-12-07T08:00:00+00:00",
        "lead_days": 7,
    }
    assert {(r.status, r.run_id, r.channels) for r in planned} == {("pending", run_id, "email")}
    assert runs(sessions)[0].status == RunStatus.PLANNED
    # When the run is planned again (a redelivered plan job)
    with sessions.begin() as s:
        s.execute(update(CampaignRun).values(status=RunStatus.PLANNING))
    again = plan_run(rt, run_id)
    # Then nothing more is written
    assert again.written == 0
    assert keys(sessions) == [r.dedupe_key for r in planned]


def test_channels_all_writes_one_row_per_channel(database_url, tmp_path, clock):
    """With `channels: all` the channel joins the once-only key."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC").id
    add_lot(sessions, member, "2026-12-30T12:00Z", 100)
    campaign = create(sessions, reminder_file(tmp_path, channels="all")).campaign_id
    plan_today(runtime_for(database_url, tmp_path), sessions)
    prefix = f"expiry:{campaign}:{member}:2026-12-30:30"
    assert keys(sessions) == sorted(
        f"{prefix}:{c}" for c in ("direct_mail", "email", "push", "sms")
    )


def test_a_plan_killed_midway_leaves_nothing_and_runs_again(
    database_url, tmp_path, clock, monkeypatch
):
    """A plan that dies after some chunks rolls back; run again, it writes every row once."""
    # Given three members with points expiring in 7 days and chunks of one row
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        members = [add_member(s, time_zone="UTC").id for _ in range(3)]
    for member in members:
        add_lot(sessions, member, "2026-12-07T12:00Z", 100)
    create(sessions, reminder_file(tmp_path))
    rt = runtime_for(database_url, tmp_path, batch_size=1)
    ensure_runs(sessions, utcnow())
    [run_id] = claim_due_runs(sessions)
    # When the plan dies while writing its third chunk
    import workers.reminders as reminders

    real, calls = reminders.insert_ignore_many, []

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(reminders, "insert_ignore_many", dying)
    with pytest.raises(RuntimeError, match="worker killed"):
        plan_run(rt, run_id)
    # Then nothing was written and the run is still planning
    assert rows(sessions) == []
    assert runs(sessions)[0].status == RunStatus.PLANNING
    # When the plan runs again
    monkeypatch.setattr(reminders, "insert_ignore_many", real)
    result = plan_run(rt, run_id)
    # Then every reminder is written once and the run is planned
    assert (result.written, len(rows(sessions))) == (3, 3)
    assert runs(sessions)[0].status == RunStatus.PLANNED


def test_min_points_counts_the_points_summed_over_the_day(database_url, tmp_path, clock):
    """40 points are below min_points 50; two lots of 30 on one local date are not."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        few, summed = add_member(s, time_zone="UTC").id, add_member(s, time_zone="UTC").id
    add_lot(sessions, few, "2026-12-07T12:00Z", 40)
    add_lot(sessions, summed, "2026-12-07T01:00Z", 30)
    add_lot(sessions, summed, "2026-12-07T23:00Z", 30)
    create(sessions, reminder_file(tmp_path, min_points=50))
    plan_today(runtime_for(database_url, tmp_path), sessions)
    assert [(r.member_id, r.payload["points"]) for r in rows(sessions)] == [(summed, 60)]


def test_the_segment_narrows_who_is_reminded(database_url, tmp_path, clock):
    """A campaign with a segment reminds only its members."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        gold = add_member(s, time_zone="UTC", tier="gold").id
        silver = add_member(s, time_zone="UTC", tier="silver").id
    for member in (gold, silver):
        add_lot(sessions, member, "2026-12-07T12:00Z", 100)
    extra = "segment: {all: [{field: tier, op: in, value: [gold]}]}\n"
    create(sessions, reminder_file(tmp_path, extra=extra))
    plan_today(runtime_for(database_url, tmp_path), sessions)
    assert [r.member_id for r in rows(sessions)] == [gold]


# -- catch-up and the expiry date ------------------------------------------------------


def test_after_ten_days_of_downtime_only_the_most_urgent_lead_goes_and_never_after_expiry(
    database_url, tmp_path, clock
):
    """30 days before: the 30-day reminder. Down for 10 days over the 7-day one: 5 days
    before, the 7-day reminder only, saying 5 days. Then the 1-day one; none from the date on."""
    # Given a member whose 200 points expire on 10 Dec
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC").id
    add_lot(sessions, member, "2026-12-10T18:00Z", 200)
    campaign = create(sessions, reminder_file(tmp_path)).campaign_id
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    key = f"expiry:{campaign}:{member}:2026-12-10"
    # When the program runs from 10 to 24 Nov, is down for 10 days, and runs on 5 Dec
    day(rt, sessions, clock, at("2026-11-10T09:00Z"))
    for quiet_day in range(11, 25):
        day(rt, sessions, clock, at(f"2026-11-{quiet_day}T09:00Z"))
    day(rt, sessions, clock, at("2026-12-05T09:00Z"))
    # Then two reminders went: the 30-day one and, late, the 7-day one (not the 30 again)
    assert keys(sessions) == [f"{key}:30", f"{key}:7"]
    assert [r.status for r in rows(sessions)] == ["sent", "sent"]
    late = channels["email"].sent[-1]
    assert "in 5 days" in late.parts["text"]
    # When the days up to the expiry date and after it run
    for when in ("2026-12-09", "2026-12-10", "2026-12-11"):
        day(rt, sessions, clock, at(f"{when}T09:00Z"))
    # Then only the 1-day reminder was added, on 9 Dec
    assert keys(sessions) == [f"{key}:1", f"{key}:30", f"{key}:7"]
    assert len(channels["email"].sent) == 3
    assert "tomorrow" in channels["email"].sent[-1].parts["text"]


def test_a_reminder_found_after_its_points_expired_is_not_sent(database_url, tmp_path, clock):
    """A 1-day reminder delivered after the expiry instant ends as no_longer_due (expired)."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC").id
    add_lot(sessions, member, "2026-12-01T06:00Z", 200)
    create(sessions, reminder_file(tmp_path))
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_today(rt, sessions)
    clock.now = at("2026-12-01T06:00Z")  # the workers were down until the points went
    deliver_open(rt, sessions)
    [row] = rows(sessions)
    assert (row.status, row.reason, row.detail) == (
        "suppressed",
        "no_longer_due",
        "expired: the points expired at 2026-12-01 06:00Z",
    )
    assert channels["email"].calls == 0


# -- the send-time recheck -------------------------------------------------------------


def test_a_redemption_between_plan_and_send_suppresses_without_a_provider_call(
    database_url, tmp_path, clock
):
    """Points redeemed after planning: suppressed as no_longer_due, no provider call."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC").id
    lot = add_lot(sessions, member, "2026-12-07T12:00Z", 300)
    create(sessions, reminder_file(tmp_path))
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_today(rt, sessions)
    redeem(sessions, lot, 300)
    deliver_open(rt, sessions)
    [row] = rows(sessions)
    assert (row.status, row.reason, row.detail) == (
        "suppressed",
        "no_longer_due",
        "redeemed: 0 points left expiring on 2026-12-07, below min_points 50",
    )
    assert channels["email"].calls == 0


def test_a_partial_redemption_sends_the_amount_still_expiring(database_url, tmp_path, clock):
    """300 points planned, 180 redeemed since: the message says 120, and so does the ledger."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC").id
    lot = add_lot(sessions, member, "2026-12-07T12:00Z", 300)
    create(sessions, reminder_file(tmp_path))
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_today(rt, sessions)
    redeem(sessions, lot, 180)
    deliver_open(rt, sessions)
    [message] = channels["email"].sent
    assert message.parts["subject"] == "120 points expire on December 7, 2026"
    [row] = rows(sessions)
    assert (row.status, row.payload["points"], row.payload["days_left"]) == ("sent", 120, 7)


# -- direct mail and lead dates --------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "business_days", "expected"),
    [
        (date(2026, 12, 7), 5, date(2026, 11, 30)),  # Mon <- Mon, over a weekend
        (date(2026, 12, 5), 5, date(2026, 11, 30)),  # Sat <- Mon
        (date(2026, 12, 6), 5, date(2026, 11, 30)),  # Sun <- Mon
        (date(2026, 12, 8), 5, date(2026, 12, 1)),  # Tue <- Tue
        (date(2026, 12, 4), 5, date(2026, 11, 27)),  # Fri <- Fri
        (date(2026, 12, 7), 1, date(2026, 12, 4)),  # Mon <- Fri
        (date(2026, 12, 6), 0, date(2026, 12, 6)),
    ],
)
def test_the_drop_date_counts_business_days_back(lead, business_days, expected):
    """The drop date is the lead date less N Monday-to-Friday days."""
    assert drop_date(lead, business_days) == expected


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2026, 11, 30), date(2026, 12, 7)),  # Monday drops Sat, Sun and Mon a week on
        (date(2026, 11, 27), date(2026, 12, 4)),
        (date(2026, 11, 28), date(2026, 12, 4)),  # nothing new on a weekend
        (date(2026, 11, 29), date(2026, 12, 4)),
    ],
)
def test_the_planning_horizon_is_the_last_lead_date_whose_drop_date_has_come(today, expected):
    """A day plans every lead date whose drop date has come; a weekend day adds none."""
    assert planning_horizon(today, 5) == expected


def test_direct_mail_is_planned_early_and_exported_at_once_over_a_weekend(
    database_url, tmp_path, clock
):
    """On Monday 30 Nov, with 5 business days, the pieces for lead dates 5-7 Dec go out."""
    # Given a 7-day reminder by post and members whose lead dates fall on Sat 5, Sun 6,
    # Mon 7 and Tue 8 Dec
    sessions = sessions_for(database_url)
    expiries = ["2026-12-12", "2026-12-13", "2026-12-14", "2026-12-15"]
    with sessions.begin() as s:
        members = [
            add_member(s, time_zone="UTC", **{**ADDRESS, "address_line1": f"Hauptstr. {n}"}).id
            for n in range(len(expiries))
        ]
    for member, expiry in zip(members, expiries, strict=True):
        add_lot(sessions, member, f"{expiry}T12:00Z", 100)
    path = reminder_file(tmp_path, channels="[direct_mail]", lead_days="[7]")
    campaign = create(sessions, path).campaign_id
    channels = scripted_channels(names=("email", "direct_mail"))
    rt = runtime_for(database_url, tmp_path, channels=channels)
    # When Saturday runs
    day(rt, sessions, clock, MONDAY - timedelta(days=2))
    # Then nothing drops on a weekend
    assert rows(sessions) == []
    # When Monday runs
    day(rt, sessions, clock, MONDAY)
    # Then the pieces for lead dates 5-7 Dec are exported now, Tuesday's is not yet
    expected = [
        f"expiry:{campaign}:{member}:{expiry}:7"
        for member, expiry in zip(members[:3], expiries, strict=False)
    ]
    assert keys(sessions) == expected
    assert [m.dedupe_key for m in channels["direct_mail"].sent] == expected
    # When Tuesday runs
    day(rt, sessions, clock, MONDAY + timedelta(days=1))
    # Then Tuesday's piece goes on Tuesday
    assert (
        channels["direct_mail"].sent[-1].dedupe_key
        == f"expiry:{campaign}:{members[3]}:{expiries[3]}:7"
    )
    assert len(channels["direct_mail"].sent) == 4


def test_postal_planning_keeps_every_lead_of_the_window(database_url, tmp_path, clock):
    """Planning a week ahead for the post loses no lead: today's, and later ones in the window."""
    # Given a member whose points expire on Mon 7 Dec and a campaign by email or post
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC", **ADDRESS).id
    add_lot(sessions, member, "2026-12-07T12:00Z", 100)
    path = reminder_file(tmp_path, channels="[email, direct_mail]")
    campaign = create(sessions, path).campaign_id
    # When Monday 30 Nov is planned (lead dates up to 7 Dec drop today)
    plan_today(runtime_for(database_url, tmp_path), sessions)
    # Then the 7-day reminder (due today) and the 1-day one (due Sun 6 Dec) are both written
    prefix = f"expiry:{campaign}:{member}:2026-12-07"
    assert keys(sessions) == [f"{prefix}:1", f"{prefix}:7"]


def test_a_reminder_by_email_waits_for_its_lead_date_in_the_members_zone(
    database_url, tmp_path, clock
):
    """Planned a week early for the post, a reminder routed to email waits for its lead date."""
    # Given a campaign preferring email, then direct mail; a New Yorker with an email
    # address and one with only a postal address, both with points expiring on 14 Dec
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        emailed = add_member(s, time_zone="America/New_York", **ADDRESS).id
        posted = add_member(s, time_zone="America/New_York", email=None, **ADDRESS).id
    for member in (emailed, posted):
        add_lot(sessions, member, "2026-12-14T20:00Z", 100)
    create(sessions, reminder_file(tmp_path, channels="[email, direct_mail]", lead_days="[7, 1]"))
    channels = scripted_channels(names=("email", "direct_mail"))
    rt = runtime_for(database_url, tmp_path, channels=channels)
    # When Monday 30 Nov runs (the 7-day lead date, 7 Dec, drops today)
    day(rt, sessions, clock, MONDAY)
    # Then the piece is exported at once and the email waits for 7 Dec in New York
    by_member = {r.member_id: r for r in rows(sessions)}
    assert [m.member_id for m in channels["direct_mail"].sent] == [posted]
    waiting = by_member[emailed]
    assert (waiting.status, waiting.reason, waiting.not_before) == (
        "deferred",
        "scheduled",
        at("2026-12-07T05:00Z"),
    )
    assert waiting.detail == "7-day reminder waits for 2026-12-07 (America/New_York)"
    # When it is delivered just before and just after that moment
    clock.now = at("2026-12-07T04:59Z")
    deliver_batch(rt, [waiting.id])
    assert channels["email"].sent == []
    clock.now = at("2026-12-07T05:00Z")
    deliver_batch(rt, [waiting.id])
    # Then it goes by email, saying 7 days
    [message] = channels["email"].sent
    assert message.member_id == emailed
    assert "in 7 days" in message.parts["text"]


# -- the template ----------------------------------------------------------------------


def test_the_template_states_the_amount_and_date_in_the_members_locale(
    database_url, tmp_path, clock
):
    """1234 points expiring on 7 Dec read as an American and as a German member expects."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        us = add_member(s, time_zone="UTC", locale="en_US", name="Ada Lovelace").id
        de = add_member(s, time_zone="UTC", locale="de_DE", tier=None, points_balance=2000).id
    for member in (us, de):
        add_lot(sessions, member, "2026-12-07T12:00Z", 1234)
    create(sessions, reminder_file(tmp_path, channels="[email, sms]"))
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    day(rt, sessions, clock, MONDAY)
    sent = {m.member_id: m.parts for m in channels["email"].sent}
    assert sent[us]["subject"] == "1,234 points expire on December 7, 2026"
    assert sent[de]["subject"] == "1.234 points expire on 7. Dezember 2026"
    assert "Your Gold balance: 1,000 points." in sent[us]["text"]
    assert "Your balance: 2.000 points." in sent[de]["text"]
    assert sent[us]["text"].startswith("Hi Ada,")


@pytest.mark.parametrize(("days_left", "when"), [(0, "today"), (1, "tomorrow"), (5, "in 5 days")])
def test_the_builtin_template_renders_every_channel_for_a_member_with_empty_fields(days_left, when):
    """Every part renders for a member without name or tier, saying when in words."""
    sources = load_templates("points-expiry", CHANNEL_PARTS)
    context = {
        "member": {"first_name": None, "tier": None, "points_balance": 0},
        "campaign": {"name": "points-expiry", "category": "service"},
        "locale": "en_US",
        "time_zone": "UTC",
        "expiring_points": 120,
        "expires_on": date(2026, 12, 3),
        "expires_at": at("2026-12-03T23:59Z"),
        "days_left": days_left,
    }
    renderer = Renderer()
    parts = {c: renderer.render("t", "points-expiry", sources, c, context) for c in CHANNEL_PARTS}
    assert parts["sms"]["text"] == (
        f"Hi, 120 of your points expire {when}, on December 3, 2026. Balance: 0 pts. "
        "Reply STOP to opt out."
    )
    assert parts["push"]["title"] == f"120 points expire {when}"
    assert parts["direct_mail"]["headline"] == "120 of your points expire on December 3, 2026"
    assert "Unsubscribe" not in parts["email"]["html"]
    assert all(text for channel in parts.values() for text in channel.values())


# -- caps ------------------------------------------------------------------------------


SERVICE_DAILY = CapRule(
    name="service-daily",
    scope="all",
    window=timedelta(days=1),
    limit=1,
    categories=frozenset({"service"}),
)


@pytest.mark.redis
@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [("2026-12-07T12:00Z", "deferred"), ("2026-12-01T06:00Z", "suppressed")],
)
def test_a_capped_reminder_waits_for_a_free_slot_before_its_deadline(
    database_url, tmp_path, clock, redis_url, redis_namespace, expires_at, expected
):
    """Over a daily cap, a reminder waits for tomorrow's slot if its points last; else it is
    suppressed."""
    # Given a member who had a service message at 09:00 under a 1-a-day cap
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(s, time_zone="UTC").id
    add_lot(sessions, member, expires_at, 100)
    channels = scripted_channels()
    rt = runtime_for(
        database_url,
        tmp_path,
        channels=channels,
        redis_url=redis_url,
        queue_namespace=redis_namespace,
        program=Program(quiet_hours={}, caps=(SERVICE_DAILY,)),
    )
    other = tmp_path / "news.yaml"
    other.write_text(
        "name: news\nkind: broadcast\ncategory: service\nchannels: [email]\n"
        "template: winter-double-points\n"
    )
    create(sessions, other)
    day(rt, sessions, clock, MONDAY)  # sends the broadcast before any reminder exists
    assert len(channels["email"].sent) == 1
    # When the reminder is planned and delivered an hour later
    create(sessions, reminder_file(tmp_path))
    day(rt, sessions, clock, MONDAY + timedelta(hours=1))
    # Then it waits for the slot freed at 09:00 tomorrow when that comes before its points
    # expire, and is suppressed otherwise
    [reminder] = [r for r in rows(sessions) if r.dedupe_key.startswith("expiry:")]
    assert (reminder.status, reminder.reason) == (expected, "frequency_cap")
    if expected == "deferred":
        assert reminder.not_before == MONDAY + timedelta(days=1)
    assert len(channels["email"].sent) == 1
