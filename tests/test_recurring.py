"""Cron broadcasts, spread, and run progress with an ETA.

Time is moved with ``store.set_clock``; the scheduler's tick (``ensure_runs``,
``claim_due_runs``) and planning run in-process against SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler import claim_due_runs
from scheduler.ticks import tick
from store import CampaignRun, CampaignVersion, Delivery, set_clock
from workers import recurrence
from workers.catalog import campaign_status
from workers.control import cancel_campaign, pause_campaign, resume_campaign
from workers.delivery import deliver_batch
from workers.occurrences import ensure_runs
from workers.planning import plan_run
from workers.schedules import Schedule
from workers.timing import spread_offset

from .support import (
    add_member,
    create,
    runtime_for,
    scripted_channels,
    sessions_for,
    write_campaign,
)
from .test_pipeline import _rows


class Clock:
    """A settable clock for ``store.set_clock``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock(datetime(2026, 3, 1, tzinfo=UTC))
    previous = set_clock(c)
    yield c
    set_clock(previous)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _cron_campaign(
    sessions: sessionmaker[Session], tmp_path: Path, schedule: str, **fields: str
) -> int:
    created = create(sessions, write_campaign(tmp_path, extra=f"schedule: {schedule}\n", **fields))
    return created.campaign_id


def _runs(sessions: sessionmaker[Session]) -> list[CampaignRun]:
    with sessions() as s:
        return list(s.scalars(select(CampaignRun).order_by(CampaignRun.id)))


def _tick_through(
    sessions: sessionmaker[Session], clock: Clock, start: datetime, end: datetime, step: timedelta
) -> None:
    at = start
    while at <= end:
        clock.now = at
        ensure_runs(sessions, at)
        at += step


# -- occurrences -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "start", "expected"),
    [
        pytest.param(
            "30 2 * * *",  # 02:30 does not exist on 8 March in New York
            "2026-03-05T00:00",
            [
                ("2026-03-05T02:30:00", "2026-03-05T07:30"),
                ("2026-03-06T02:30:00", "2026-03-06T07:30"),
                ("2026-03-07T02:30:00", "2026-03-07T07:30"),
                ("2026-03-08T02:30:00", "2026-03-08T07:00"),  # the gap: 03:00 EDT
                ("2026-03-09T02:30:00", "2026-03-09T06:30"),
                ("2026-03-10T02:30:00", "2026-03-10T06:30"),
                ("2026-03-11T02:30:00", "2026-03-11T06:30"),
            ],
            id="spring-forward",
        ),
        pytest.param(
            "30 1 * * *",  # 01:30 happens twice on 1 November in New York
            "2026-10-29T00:00",
            [
                ("2026-10-29T01:30:00", "2026-10-29T05:30"),
                ("2026-10-30T01:30:00", "2026-10-30T05:30"),
                ("2026-10-31T01:30:00", "2026-10-31T05:30"),
                ("2026-11-01T01:30:00", "2026-11-01T05:30"),  # the first 01:30 (EDT)
                ("2026-11-02T01:30:00", "2026-11-02T06:30"),
                ("2026-11-03T01:30:00", "2026-11-03T06:30"),
                ("2026-11-04T01:30:00", "2026-11-04T06:30"),
            ],
            id="fall-back",
        ),
    ],
)
def test_a_daily_cron_neither_skips_nor_doubles_across_a_dst_week(
    database_url, tmp_path, clock, cron, start, expected
):
    """Each wall-clock occurrence becomes one run, due DST-safe, written when it falls due."""
    # Given a daily broadcast at a New York wall time, created before the week
    sessions = sessions_for(database_url)
    clock.now = _at(start)
    _cron_campaign(sessions, tmp_path, f'{{cron: "{cron}", timezone: America/New_York}}')
    # When the scheduler ticks every half hour for a week
    step = timedelta(minutes=30)
    _tick_through(sessions, clock, _at(start), _at(start) + timedelta(days=7), step)
    # Then there is one run per day, due at that day's wall time, written on its first tick
    runs = _runs(sessions)
    assert [(r.occurrence, r.due_at) for r in runs] == [(o, _at(d)) for o, d in expected]
    assert all(timedelta(0) <= r.created_at - r.due_at < step for r in runs)


class LogRecorder:
    """Stands in for a module's structlog logger: keeps (event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def _record(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    info = warning = _record


def test_after_downtime_only_the_latest_missed_occurrence_is_written(
    database_url, tmp_path, clock, monkeypatch
):
    """Four days without a tick: one late run for the latest day; the others are logged."""
    sessions = sessions_for(database_url)
    clock.now = _at("2026-03-01T09:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *", timezone: UTC}')
    clock.now = _at("2026-03-01T10:05")
    ensure_runs(sessions, clock.now)
    # When the scheduler comes back on 5 March at noon
    clock.now = _at("2026-03-05T12:00")
    logs = LogRecorder()
    monkeypatch.setattr(recurrence, "log", logs)
    ensure_runs(sessions, clock.now)
    # Then the 5 March occurrence is written, and 2-4 March are reported skipped
    assert [r.occurrence for r in _runs(sessions)] == ["2026-03-01T10:00:00", "2026-03-05T10:00:00"]
    skipped = [f for e, f in logs.events if e.startswith("missed occurrences skipped")]
    assert [(f["skipped"], f["first_skipped"]) for f in skipped] == [(3, "2026-03-02T10:00:00")]


def test_a_recurrence_starts_after_its_campaign_is_created(database_url, tmp_path, clock):
    """Creating a daily 10:00 campaign at noon does not send that morning's occurrence."""
    sessions = sessions_for(database_url)
    clock.now = _at("2026-03-01T12:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *"}')
    ensure_runs(sessions, clock.now)
    assert _runs(sessions) == []
    clock.now = _at("2026-03-02T10:00")
    ensure_runs(sessions, clock.now)
    assert [r.occurrence for r in _runs(sessions)] == ["2026-03-02T10:00:00"]


def test_until_ends_the_recurrence_inclusively(database_url, tmp_path, clock):
    """With until 3 March 10:00 the occurrences of 1, 2 and 3 March run, and no more."""
    sessions = sessions_for(database_url)
    clock.now = _at("2026-02-28T12:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *", until: "2026-03-03T10:00"}')
    _tick_through(
        sessions, clock, _at("2026-03-01T00:00"), _at("2026-03-06T00:00"), timedelta(hours=2)
    )
    assert [r.occurrence[:10] for r in _runs(sessions)] == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
    ]


def test_an_edited_schedule_cancels_an_occurrence_it_no_longer_has(database_url, tmp_path, clock):
    """A still-scheduled 10:00 run is cancelled when the cron moves to 11:00; 11:00 then runs."""
    # Given a written, not yet claimed 10:00 run
    sessions = sessions_for(database_url)
    clock.now = _at("2026-03-01T09:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *"}')
    clock.now = _at("2026-03-01T10:00")
    ensure_runs(sessions, clock.now)
    # When the campaign is edited to 11:00 before the run was claimed
    clock.now = _at("2026-03-01T10:01")
    _cron_campaign(sessions, tmp_path, '{cron: "0 11 * * *"}')
    ensure_runs(sessions, clock.now)
    # Then the 10:00 run is cancelled, and the claim finds nothing
    assert [(r.occurrence, r.status) for r in _runs(sessions)] == [
        ("2026-03-01T10:00:00", "cancelled")
    ]
    assert claim_due_runs(sessions) == []
    # And at 11:00 the new occurrence runs with the new version
    clock.now = _at("2026-03-01T11:00")
    ensure_runs(sessions, clock.now)
    runs = _runs(sessions)
    assert [(r.occurrence, r.status) for r in runs][-1] == ("2026-03-01T11:00:00", "scheduled")
    with sessions() as s:
        latest_version = s.scalar(select(func.max(CampaignVersion.id)))
    assert runs[-1].campaign_version_id == latest_version


def test_an_edit_of_the_zone_retimes_a_scheduled_occurrence(database_url, tmp_path, clock):
    """A scheduled run whose wall time is still an occurrence takes the new zone's instant."""
    sessions = sessions_for(database_url)
    clock.now = _at("2026-03-01T09:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *"}')
    clock.now = _at("2026-03-01T10:00")
    ensure_runs(sessions, clock.now)
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *", timezone: America/New_York}')
    ensure_runs(sessions, clock.now)
    assert [(r.status, r.due_at) for r in _runs(sessions)] == [
        ("scheduled", _at("2026-03-01T15:00"))
    ]
    assert claim_due_runs(sessions) == []


def test_the_tick_writes_claims_and_enqueues_an_occurrence(database_url, tmp_path, clock):
    """One tick at 10:00 writes the occurrence's run, claims it and enqueues its plan."""
    sessions = sessions_for(database_url)
    clock.now = _at("2026-03-01T09:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *"}')
    broker = StubBroker()
    broker.declare_queue("plan")
    clock.now = _at("2026-03-01T10:00:03")
    claimed = tick(sessions, broker)
    assert claimed == [r.id for r in _runs(sessions)]
    assert broker.queues["plan"].qsize() == 1
    assert tick(sessions, broker) == []  # the next tick: nothing new


# -- member-local cron ---------------------------------------------------------------


def test_a_member_local_cron_holds_each_member_until_that_occurrence_in_their_zone(
    database_url, tmp_path, clock
):
    """Every day at 10:00 member-local: each run's rows wait for that day's 10:00 per member."""
    # Given members in Tokyo and New York (which springs forward on 8 March)
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        tokyo = add_member(s, time_zone="Asia/Tokyo").id
        ny = add_member(s, time_zone="America/New_York").id
    clock.now = _at("2026-03-07T00:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *", timezone: member}')
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    # When 10:00 on 8 and 9 March arrive in the earliest zone (UTC+14), and the runs are planned
    run_ids = []
    for day in ("2026-03-07T20:00", "2026-03-08T20:00"):
        clock.now = _at(day)
        ensure_runs(sessions, clock.now)
        run_ids += claim_due_runs(sessions)
        plan_run(rt, run_ids[-1])
    # Then each run has its own keys, and each row waits for that day's 10:00 in the member's zone
    assert [r.occurrence for r in _runs(sessions)] == ["2026-03-08T10:00:00", "2026-03-09T10:00:00"]
    rows = {(r.run_id, r.member_id): r for r in _rows(sessions)}
    assert {(key, r.not_before) for key, r in rows.items()} == {
        ((run_ids[0], tokyo), _at("2026-03-08T01:00")),
        ((run_ids[0], ny), _at("2026-03-08T14:00")),  # 10:00 EDT, the first day of DST
        ((run_ids[1], tokyo), _at("2026-03-09T01:00")),
        ((run_ids[1], ny), _at("2026-03-09T14:00")),
    }
    assert len({r.dedupe_key for r in rows.values()}) == 4
    assert rows[run_ids[1], ny].detail == "2026-03-09 10:00 member-local (America/New_York)"
    # When the deliver job runs at 01:30Z on 8 March
    clock.now = _at("2026-03-08T01:30")
    deliver_batch(rt, [r.id for r in rows.values()])
    # Then only the Tokyo member's first message went
    assert [m.member_id for m in channels["email"].sent] == [tokyo]
    assert rows[run_ids[0], tokyo].id in {m.delivery_id for m in channels["email"].sent}


# -- spread ----------------------------------------------------------------------------


def test_spread_offsets_are_fixed_bounded_and_even():
    """Offsets are the same every time for a (run, member), within [0, spread), evenly spread."""
    spread = timedelta(hours=2)
    offsets = [spread_offset(7, member_id, spread) for member_id in range(1, 10_001)]
    assert all(timedelta(0) <= o < spread for o in offsets)
    assert spread_offset(7, 42, spread) == offsets[41]
    assert spread_offset(8, 42, spread) != offsets[41]  # another run, another order
    buckets = Counter(int(o / (spread / 10)) for o in offsets)
    assert sorted(buckets) == list(range(10))
    assert all(900 <= n <= 1100 for n in buckets.values()), buckets


def test_a_spread_run_staggers_its_rows_then_completes(database_url, tmp_path, clock):
    """spread: 2h defers each row to start + its offset; once due, all go and the run completes."""
    # Given 40 members and a broadcast at 10:00Z spread over 2h
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        for _ in range(40):
            add_member(s)
    clock.now = _at("2026-03-10T09:00")
    created = create(
        sessions,
        write_campaign(
            tmp_path,
            channels="[email]",
            extra='schedule: {at: "2026-03-10T10:00:00+00:00", spread: 2h}\n',
        ),
    )
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    # When it is planned at 10:00 and a deliver job runs at once
    clock.now = _at("2026-03-10T10:00")
    assert claim_due_runs(sessions) == [created.run_id]
    plan_run(rt, created.run_id)
    rows = _rows(sessions)
    deliver_batch(rt, [r.id for r in rows])
    # Then every row waits for its own moment within [10:00, 12:00), the first hour and the
    # second both used, and nothing was sent
    starts = [r.not_before for r in rows]
    assert {(r.status, r.reason) for r in rows} == {("deferred", "scheduled")}
    assert all(_at("2026-03-10T10:00") <= t < _at("2026-03-10T12:00") for t in starts)
    assert 8 <= sum(t < _at("2026-03-10T11:00") for t in starts) <= 32
    assert rows[0].detail.startswith("spread over 2h: +")
    assert channels["email"].calls == 0
    # When the clock passes 11:00, only the rows due by then go
    clock.now = _at("2026-03-10T11:00")
    deliver_batch(rt, [r.id for r in rows])
    assert len(channels["email"].sent) == sum(t <= clock.now for t in starts)
    # When it passes 12:00, the rest go and the run is completed
    clock.now = _at("2026-03-10T12:00")
    deliver_batch(rt, [r.id for r in rows])
    assert len(channels["email"].sent) == 40
    assert [r.status for r in _runs(sessions)] == ["completed"]


def test_a_member_local_spread_starts_at_each_members_own_instant(database_url, tmp_path, clock):
    """With timezone: member and spread, a member's row is within spread of their own 10:00."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        tokyo = add_member(s, time_zone="Asia/Tokyo").id
        berlin = add_member(s, time_zone="Europe/Berlin").id
    clock.now = _at("2026-03-09T00:00")
    created = create(
        sessions,
        write_campaign(
            tmp_path, extra='schedule: {at: "2026-03-10T10:00", timezone: member, spread: 30m}\n'
        ),
    )
    clock.now = _at("2026-03-09T20:00")  # 10:00 in UTC+14
    claim_due_runs(sessions)
    plan_run(runtime_for(database_url, tmp_path), created.run_id)
    rows = {r.member_id: r for r in _rows(sessions)}
    own = {tokyo: _at("2026-03-10T01:00"), berlin: _at("2026-03-10T09:00")}
    for member_id, start in own.items():
        offset = spread_offset(created.run_id, member_id, timedelta(minutes=30))
        assert rows[member_id].not_before == start + offset
    assert rows[berlin].detail.startswith("2026-03-10 10:00 member-local (Europe/Berlin), spread")


# -- progress and ETA ----------------------------------------------------------------


def _broadcast_now(database_url: str, tmp_path: Path, members: int, **fields: str):
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        for _ in range(members):
            add_member(s)
    created = create(sessions, write_campaign(tmp_path, channels="[email]", **fields))
    claim_due_runs(sessions)
    plan_run(runtime_for(database_url, tmp_path), created.run_id)
    return sessions, created.run_id


def test_status_estimates_from_the_provider_rate_before_anything_is_sent(
    database_url, tmp_path, clock
):
    """10 email rows at 2/s configured: ETA in 5 s, rate configured."""
    clock.now = _at("2026-03-10T10:00")
    sessions, _run_id = _broadcast_now(database_url, tmp_path, 10)
    report = campaign_status(sessions, "test-broadcast", rates={"email": 2.0})
    (run,) = report.runs
    assert (run["planned"], run["sent"], run["open"], run["waiting"]) == (10, 0, 10, 0)
    assert (run["rate"], run["rate_source"], run["eta_basis"]) == (2.0, "configured", "configured")
    assert run["eta"] == clock.now + timedelta(seconds=5)


def test_status_estimates_from_measured_throughput_once_sending(database_url, tmp_path, clock):
    """6 rows sent over the last minute (0.1/s): the 4 left finish in 40 s."""
    clock.now = _at("2026-03-10T10:00")
    sessions, _run_id = _broadcast_now(database_url, tmp_path, 10)
    ids = [r.id for r in _rows(sessions)]
    with sessions.begin() as s:
        for i, delivery_id in enumerate(ids[:6]):
            s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(status="sent", sent_at=clock.now - timedelta(seconds=60 - 12 * i))
            )
    report = campaign_status(sessions, "test-broadcast", rates={"email": 2.0})
    (run,) = report.runs
    assert (run["sent"], run["open"]) == (6, 4)
    assert run["rate_source"] == "measured"
    assert run["rate"] == pytest.approx(0.1)
    assert run["eta"] == clock.now + timedelta(seconds=40)


def test_status_of_deferred_rows_reports_when_the_last_is_due(database_url, tmp_path, clock):
    """Rows spread over 2h: the ETA is the last row's moment, not an estimate from rate."""
    clock.now = _at("2026-03-10T10:00")
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        for _ in range(12):
            add_member(s)
    created = create(
        sessions,
        write_campaign(
            tmp_path,
            channels="[email]",
            extra='schedule: {at: "2026-03-10T10:00:00+00:00", spread: 2h}\n',
        ),
    )
    claim_due_runs(sessions)
    plan_run(runtime_for(database_url, tmp_path), created.run_id)
    last = max(r.not_before for r in _rows(sessions))
    (run,) = campaign_status(sessions, "test-broadcast", rates={"email": 2.0}).runs
    assert (run["open"], run["waiting"], run["last_due"]) == (12, 12, last)
    assert (run["eta"], run["eta_basis"]) == (last, "last row due")
    # Paused, it has no ETA
    pause_campaign(sessions, "test-broadcast")
    (run,) = campaign_status(sessions, "test-broadcast", rates={"email": 2.0}).runs
    assert (run["open"], run["eta"]) == (12, None)


def test_the_status_command_shows_progress_and_eta(database_url, tmp_path):
    """`campaigns status` prints planned, sent, open and the ETA with its basis."""
    # Given 10 email rows planned just now (the command runs on the system clock)
    _broadcast_now(database_url, tmp_path, 10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALCAST_")}
    env.update(
        LOYALCAST_DATABASE_URL=database_url,
        LOYALCAST_DATA_DIR=str(tmp_path / "data"),
        LOYALCAST_SENDGRID_RATE="2",
        LOYALCAST_LOG_LEVEL="WARNING",
        COLUMNS="160",  # a wide terminal: one line per run
    )
    # When an operator asks for the campaign's status
    result = subprocess.run(
        [str(Path(sys.executable).parent / "loyalcast"), "campaigns", "status", "test-broadcast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then the run's line has its counts and an ETA from the configured 2/s
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "┃ planned ┃ sent ┃ open ┃ ETA" in text
    assert re.search(r"│ planned │ 10 │ 0 │ 10 │ \S+Z \(in [0-5]s, 2/s configured\) │", text), text


def test_campaigns_create_names_the_next_occurrence_of_a_cron(sqlite_url, tmp_path):
    """Creating a cron campaign says when its first run will fall due (there is no run yet)."""
    path = write_campaign(tmp_path, extra='schedule: {cron: "0 10 * * *", timezone: UTC}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALCAST_")}
    env.update(LOYALCAST_DATABASE_URL=sqlite_url, LOYALCAST_LOG_LEVEL="WARNING", COLUMNS="160")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "loyalcast"), "campaigns", "create", str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    now = datetime.now(UTC)
    first = now.replace(hour=10, minute=0, second=0, microsecond=0)
    if first <= now:
        first += timedelta(days=1)
    assert (
        f"campaign test-broadcast created (version 1); next occurrence {first:%Y-%m-%d} 10:00 "
        f"UTC, due {first:%Y-%m-%d} 10:00Z"
    ) in " ".join(result.stdout.split())


def test_the_next_occurrence_after_an_instant_is_resolved_in_its_zone():
    """From 2026-03-08 06:00Z, the next 02:30 New York occurrence is 9 March (after the gap)."""
    daily = recurrence.Recurrence(Schedule(cron="30 2 * * *", timezone="America/New_York"))
    assert daily.next_after(_at("2026-03-08T06:00")) == datetime(2026, 3, 8, 2, 30)
    assert daily.next_after(_at("2026-03-08T07:00")) == datetime(2026, 3, 9, 2, 30)


def test_cancel_ends_the_recurrence_and_resume_after_a_pause_sends_only_the_latest(
    database_url, tmp_path, clock
):
    """Paused over three occurrences, resumed: one late run; cancelled: no run ever again."""
    sessions = sessions_for(database_url)
    clock.now = _at("2026-03-01T09:00")
    _cron_campaign(sessions, tmp_path, '{cron: "0 10 * * *"}')
    pause_campaign(sessions, "test-broadcast")
    _tick_through(
        sessions, clock, _at("2026-03-01T09:30"), _at("2026-03-03T12:00"), timedelta(hours=6)
    )
    assert _runs(sessions) == []
    resume_campaign(sessions, "test-broadcast")
    clock.now = _at("2026-03-03T12:05")
    ensure_runs(sessions, clock.now)
    assert [r.occurrence for r in _runs(sessions)] == ["2026-03-03T10:00:00"]
    cancel_campaign(sessions, "test-broadcast")
    _tick_through(
        sessions, clock, _at("2026-03-04T00:00"), _at("2026-03-06T00:00"), timedelta(hours=6)
    )
    assert [(r.occurrence, r.status) for r in _runs(sessions)] == [
        ("2026-03-03T10:00:00", "cancelled")
    ]
