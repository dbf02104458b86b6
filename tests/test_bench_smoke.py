"""The benchmark framework still runs, and its figures count the right things.

The smallest path through ``python -m bench`` (a fresh seeded database,
segment evaluation, the raw HTTP baseline against the provider fakes) at 200
members. Nothing here looks at timing: the counts are checked against the
segment rules' Python reference evaluator and against the consent rules,
and every rate must merely be a positive number.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bench.cli import main
from bench.environment import database_on
from bench.meters import DatabaseCpu, Intake, check_intake
from bench.scenarios.broadcast import KINDS, throughput_series
from bench.scenarios.capped_world import caps_policy, quiet_window
from bench.scenarios.segment_eval import RULES
from segments import evaluate_rule, parse_rule
from store import Consent, Member, PointLot, PushToken, make_engine, set_clock
from workers.policy import valid_email, valid_phone
from workers.program import parse_program
from workers.quiet_hours import is_quiet

from .conftest import PG_ADMIN_URL, REDIS_TEST_URL, require_postgres, require_redis

pytestmark = [pytest.mark.usefixtures("provider_specs"), pytest.mark.postgres, pytest.mark.redis]

MEMBERS = 200


def _members(url: str) -> list[dict[str, Any]]:
    """Every member as the reference evaluator takes it: columns, consents, tokens, lots."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            members = {
                row.id: {**row._asdict(), "consents": {}, "push_tokens": [], "lots": []}
                for row in conn.execute(select(*Member.__table__.columns))
            }
            for c in conn.execute(select(Consent.member_id, Consent.channel, Consent.status)):
                members[c.member_id]["consents"][c.channel] = c.status
            for t in conn.execute(select(PushToken.member_id, PushToken.revoked_at)):
                members[t.member_id]["push_tokens"].append({"revoked_at": t.revoked_at})
            for lot in conn.execute(
                select(PointLot.member_id, PointLot.points, PointLot.redeemed, PointLot.expires_at)
            ):
                members[lot.member_id]["lots"].append(lot._asdict())
    finally:
        engine.dispose()
    return list(members.values())


def _sendable(member: dict[str, Any], channels: list[str]) -> bool:
    """Marketing consent rule: an opt-in on a channel the member is reachable on."""
    for channel in channels:
        if member["consents"].get(channel) != "opted_in":
            continue
        if channel == "email" and member["email"] and valid_email(member["email"]):
            return True
        if channel == "sms" and member["phone"] and valid_phone(member["phone"]):
            return True
    return False


def _figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {row["label"]: {f["name"]: f["value"] for f in row["figures"]} for row in result["rows"]}


def test_segments_raw_and_deliver_report_the_counts_the_rules_and_consents_give(
    tmp_path: Path,
) -> None:
    """At 200 members every rule's count, raw request count and send count is the reference's."""
    require_postgres()
    require_redis()
    # Given a fixed clock, so relative rules resolve identically here and in the bench
    now = datetime.now(UTC).replace(microsecond=0)
    previous = set_clock(lambda: now)
    out = tmp_path / "results.json"
    database = work_dir = None
    try:
        # When the bench runs segment evaluation, the raw HTTP baseline and the
        # deliver job at 200 members
        code = main(
            [
                "segments",
                "raw",
                "deliver",
                "--deliver-rows",
                str(MEMBERS),
                "--members",
                str(MEMBERS),
                "--baseline-limit",
                str(MEMBERS),
                "--repeat",
                "1",
                "--database-url",
                PG_ADMIN_URL,
                "--redis-url",
                REDIS_TEST_URL,
                "--json",
                str(out),
                "--keep",
            ]
        )
        data = json.loads(out.read_text())
        database, work_dir = data["parameters"]["database"], data["parameters"]["work_dir"]
        assert code == 0
        members = _members(database_on(PG_ADMIN_URL, database))
        assert len(members) == MEMBERS
        results = {r["scenario"]: r for r in data["results"]}

        # Then each rule's count is what the reference evaluator says, and was timed
        segments = _figures(results["segments"])
        for name, rule in RULES.items():
            parsed = parse_rule(rule, "segment")
            expected = sum(evaluate_rule(parsed, m, now=now) for m in members)
            assert segments[name]["members"] == expected, name
            assert segments[name]["count median"] > 0
            assert segments[name]["stream ids/s"] > 0
        assert len({s["members"] for s in segments.values()}) > 1  # the rules differ

        # And the raw loop sent one message per member the consent rules allow
        raw = _figures(results["raw"])
        for kind, channels in KINDS.items():
            expected = sum(_sendable(m, channels) for m in members)
            assert raw[f"raw {kind}"]["messages"] == expected, kind
            assert 0 < expected < MEMBERS
            assert raw[f"raw {kind}"]["msgs/s"] > 0

        # And the plan and deliver jobs, run in the bench's process, planned every
        # member and sent to those same members (the fakes agreeing), at some cost
        deliver = _figures(results["deliver"])
        for kind, channels in KINDS.items():
            expected = sum(_sendable(m, channels) for m in members)
            assert deliver[f"{kind} plan"]["rows"] == MEMBERS, kind
            assert deliver[f"{kind} deliver"]["sent"] == expected, kind
            assert deliver[f"{kind} deliver"]["suppressed"] == MEMBERS - expected, kind
            assert deliver[f"{kind} deliver"]["thread CPU/row"] > 0
        assert data["machine"]["logical_cpus"] >= 1
        assert data["machine"]["postgresql_autovacuum"] in ("on", "off")
    finally:
        set_clock(previous)
        if work_dir is not None:  # --keep kept the worker logs too
            shutil.rmtree(work_dir, ignore_errors=True)
        if database is not None:
            admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.dispose()


def test_database_cpu_counts_the_local_server_s_work_and_nothing_for_sqlite(
    tmp_path: Path,
) -> None:
    """The server's CPU is read around the block: a query that burns it shows up."""
    require_postgres()
    engine = make_engine(PG_ADMIN_URL)
    try:
        # When a query keeps a backend busy inside the block
        with DatabaseCpu(engine) as idle:
            pass
        with DatabaseCpu(engine) as busy, engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM generate_series(1, 3000000)").scalar()
    finally:
        engine.dispose()
    # Then its time is counted, and an empty block counts (almost) none
    assert busy.pid is not None
    assert busy.seconds is not None
    assert busy.seconds > 0.05
    assert idle.seconds is not None
    assert idle.seconds < busy.seconds
    # And a database that is not a local PostgreSQL server is not measured
    sqlite = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with DatabaseCpu(sqlite) as none:
            pass
    finally:
        sqlite.dispose()
    assert none.pid is None
    assert none.seconds is None


def test_throughput_series_bins_messages_per_second_from_the_start() -> None:
    """Cumulative counts become per-second rates, empty seconds included."""
    timeline = [(100.2, 0), (100.7, 5), (101.4, 9), (103.1, 10)]
    assert throughput_series(timeline, start=100.0) == [
        (1.0, 5.0),
        (2.0, 4.0),
        (3.0, 0.0),
        (4.0, 1.0),
    ]


def test_check_intake_refuses_a_recipient_served_twice_even_when_the_total_matches() -> None:
    """A repeat and a miss that cancel out in the count are still caught."""
    expected = Counter({"twilio:+15550001": 1, "twilio:+15550002": 1})
    intake = Intake(messages=2, recipients=Counter({"twilio:+15550001": 2}))
    with pytest.raises(AssertionError, match="repeated"):
        check_intake("ours sms", intake, expected)
    check_intake("ours sms", Intake(messages=2, recipients=Counter(expected)), expected)


def test_members_sharing_a_phone_each_count_once() -> None:
    """Two members with one number are two expected messages, not a duplicate."""
    shared = Counter({"twilio:+15550001": 2})
    check_intake("ours sms", Intake(messages=2, recipients=Counter(shared)), Counter(shared))


def test_the_quiet_minute_of_scenario_d_is_one_no_zone_reaches() -> None:
    """Scenario d's quiet window lies where no member's clock goes during the horizon."""
    zones = ["America/New_York", "Europe/Paris", "Asia/Tokyo", "Asia/Kolkata", "UTC"]
    now = datetime(2026, 11, 23, 6, 59, 30, tzinfo=UTC)
    horizon = timedelta(hours=2)
    window = quiet_window(zones, now, horizon)
    assert window.zones_inside == 0
    program = parse_program(caps_policy(window))
    for zone in zones:
        for minutes in range(0, 121, 5):
            at = now + timedelta(minutes=minutes)
            assert not is_quiet(at, zone, program.quiet_hours_for("sms")), (zone, at)
            assert not is_quiet(at, zone, program.quiet_hours_for("email")), (zone, at)
    assert [rule.name for rule in program.caps] == ["marketing-weekly", "sms-daily"]
