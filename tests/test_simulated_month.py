"""A month of a 10,000-member program on a clock the test controls (issue 5's proof).

Three campaigns run side by side for 30 simulated days, stepped hour by hour
through the scheduler's tick, the sweeper and the real actors
(:mod:`tests.month`), with the live SendGrid and Twilio channels talking to
the provider fakes, which validate every request against the official specs:

- ``points-expiry``: reminders 30, 7 and 1 days before points expire;
- ``welcome``: a three-step sequence for 200 members who enroll during the
  month, its second step skipped for members who already bought something
  and its third only for gold and platinum members;
- ``weekly``: a broadcast every Monday at 10:00 in each member's own zone
  (ten zones) to platinum members, with a 2-per-7-days marketing
  cap and SMS quiet hours.

Midway, 300 members redeem the points of a deadline. Then every count is
reconciled between the ledger and the fakes, and each promise is checked
row by row: once per key, nothing after an expiry or a redemption, steps at
their offsets and conditions, the broadcast at 10:00 local, caps and quiet
hours kept.
"""

from __future__ import annotations

import random
import textwrap
import zoneinfo
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from channels.fakes.sendgrid import DEFAULT_API_KEY, FakeSendGrid
from channels.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from loyalcast.demo.seed import seed_members
from loyalcast.settings import Settings
from store import (
    Campaign,
    CampaignRun,
    Delivery,
    Enrollment,
    Member,
    PointLot,
    make_engine,
    make_sessionmaker,
)
from workers.catalog import create_campaign
from workers.program import parse_program
from workers.runtime import Runtime
from workers.sequences import enroll

from .month import Simulation

pytestmark = [
    pytest.mark.usefixtures("provider_specs"),
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.timeout(900),
]

MEMBERS = 10_000
ENROLLEES = 200
REDEEMERS = 300
START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # a Sunday; Mondays follow
END = START + timedelta(days=30)
STEP = timedelta(hours=1)
MARKETING_CAP = 2

POLICY = """\
default_time_zone: America/New_York
quiet_hours:
  sms: {start: "21:00", end: "08:00"}
  email: null
caps:
  - {name: marketing-weekly, scope: all, window: 7d, limit: 2, categories: [marketing]}
  - {name: sms-daily, scope: sms, window: calendar_day, limit: 1,
     categories: [marketing, service]}
"""

EXPIRY = """\
name: points-expiry
kind: expiry_reminder
category: service
lead_days: [30, 7, 1]
min_points: 200
channels: [email, sms]
template: points-expiry
"""

WELCOME = """\
name: welcome
kind: welcome_sequence
category: marketing
channels: [email]
steps:
  - {after: 0m, template: welcome-1}
  - {after: 2d, channels: [sms, email], template: month-tips,
     unless: {field: purchases_count, op: ">", value: 0}}
  - {after: 7d, template: month-perks,
     only_if: {field: tier, op: in, value: [gold, platinum]}}
"""

WEEKLY = """\
name: weekly
kind: broadcast
category: marketing
segment: {field: tier, op: "=", value: platinum}
channels: [email, sms]
template: winter-double-points
schedule: {cron: "0 10 * * MON", timezone: member}
"""


def _templates(folder: Path) -> None:
    """Two small templates of the program's own for the sequence's later steps."""
    for name, line in (
        ("month-tips", "Tip: scan your card at checkout to earn points."),
        ("month-perks", "Your {{ member.tier or 'member' }} perks are waiting."),
    ):
        parts = {
            "sms.text.j2": line,
            "email.subject.j2": line,
            "email.text.j2": line,
            "email.html.j2": "<p>" + line + "</p>",
        }
        (folder / name).mkdir(parents=True)
        for filename, source in parts.items():
            (folder / name / filename).write_text(source + "\n", encoding="utf-8")


@pytest.fixture
def program_world(pg_url: str, tmp_path: Path, redis_url: str, redis_namespace: str):
    engine = make_engine(pg_url)
    seed_members(engine, MEMBERS, seed=11, now=START)
    sessions = make_sessionmaker(engine)
    program = parse_program(POLICY, "policy.yaml")
    _templates(tmp_path / "templates")
    for name, text in (("points-expiry", EXPIRY), ("welcome", WELCOME), ("weekly", WEEKLY)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    yield engine, sessions, program
    engine.dispose()


def _runtime(
    pg_url: str, tmp_path: Path, redis_url: str, namespace: str, twilio: Any, sendgrid: Any
) -> Runtime:
    settings = Settings.from_env(
        {
            "LOYALCAST_DATA_DIR": str(tmp_path / "data"),
            "LOYALCAST_DATABASE_URL": pg_url,
            "LOYALCAST_REDIS_URL": redis_url,
            "LOYALCAST_QUEUE_NAMESPACE": namespace,
            "LOYALCAST_PUBLIC_URL": "https://loyalty.example",
            "LOYALCAST_BATCH_SIZE": "1000",
            "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": "+15005550006",
            "LOYALCAST_TWILIO_BASE_URL": twilio.url,
            "LOYALCAST_TWILIO_RATE": "100000",
            "SENDGRID_API_KEY": DEFAULT_API_KEY,
            "SENDGRID_FROM_EMAIL": "rewards@loyalty.example",
            "SENDGRID_API_HOST": sendgrid.url,
            "LOYALCAST_SENDGRID_RATE": "100000",
        }
    )
    return Runtime(settings, StubBroker(), program=parse_program(POLICY, "policy.yaml"))


def test_a_month_of_reminders_sequences_and_weekly_broadcasts_keeps_every_promise(
    program_world, pg_url, tmp_path, redis_url, redis_namespace
):
    engine, sessions, program = program_world
    rng = random.Random(5)
    with FakeTwilio() as twilio, FakeSendGrid() as sendgrid:
        rt = _runtime(pg_url, tmp_path, redis_url, redis_namespace, twilio, sendgrid)
        broker = rt.broker
        assert isinstance(broker, StubBroker)
        sim = Simulation(rt, broker, START)
        with sim:
            for name in ("points-expiry", "welcome", "weekly"):
                create_campaign(
                    sessions,
                    tmp_path / f"{name}.yaml",
                    template_path=[tmp_path / "templates"],
                    program=program,
                )
            enrolled_at: dict[int, datetime] = {}
            redeemed: dict[int, tuple[datetime, set[datetime]]] = {}

            def newcomer(i: int) -> None:
                [member_id] = seed_members(engine, 1, seed=1000 + i, now=sim.clock.now)
                enroll(sessions, [member_id], source="api", broker=broker)
                enrolled_at[member_id] = sim.clock.now

            def redeem() -> None:
                """Members redeem every lot of one deadline 3 to 40 days ahead."""
                now = sim.clock.now
                with sessions.begin() as session:
                    lots = session.execute(
                        select(PointLot.id, PointLot.member_id, PointLot.expires_at)
                        .where(
                            PointLot.expires_at > now + timedelta(days=3),
                            PointLot.expires_at < now + timedelta(days=40),
                            PointLot.member_id <= MEMBERS,
                        )
                        .order_by(PointLot.member_id, PointLot.expires_at)
                    ).all()
                    first_lot: dict[int, Any] = {}
                    for lot in lots:
                        first_lot.setdefault(lot.member_id, lot)
                    chosen = rng.sample(sorted(first_lot), REDEEMERS)
                    for member_id in chosen:
                        lot = first_lot[member_id]
                        session.execute(
                            update(PointLot)
                            .where(PointLot.id == lot.id)
                            .values(redeemed=PointLot.points)
                        )
                        redeemed[member_id] = (now, {lot.expires_at})

            for i in range(ENROLLEES):
                sim.at(
                    START + timedelta(seconds=rng.randint(0, 27 * 86400)), lambda i=i: newcomer(i)
                )
            sim.at(START + timedelta(days=12), redeem)
            sim.run_until(END, STEP)

        assert twilio.invalid == []
        assert sendgrid.invalid == []
        rows = _ledger(sessions)
        members = _members(sessions)
        sent = [r for r in rows if r["status"] == "sent"]

        # The ledger and the fakes agree, message for message
        by_channel = Counter(r["channel"] for r in sent)
        assert len(sendgrid.mails) == by_channel["email"]
        assert len(twilio.messages) == by_channel["sms"]
        delivery_ids = Counter(int(m.custom_args["delivery_id"]) for m in sendgrid.mails)
        assert set(delivery_ids.values()) == {1}
        assert set(delivery_ids) == {r["id"] for r in sent if r["channel"] == "email"}

        _check_reminders(rows, members, redeemed)
        _check_welcome(sessions, rows, members, enrolled_at)
        _check_weekly(sessions, rows, members)
        _check_caps_and_quiet_hours(sent, members)
        print(
            f"simulated month: {len(rows)} rows, {len(sent)} sent "
            f"({dict(by_channel)}), {sim.jobs_run} jobs, "
            f"outcomes {dict(Counter((r['campaign'], r['status']) for r in rows))}"
        )
        rt.close()


def _ledger(sessions) -> list[dict[str, Any]]:
    with sessions() as session:
        return [
            dict(row._mapping)
            for row in session.execute(
                select(
                    Delivery.id,
                    Delivery.member_id,
                    Delivery.status,
                    Delivery.reason,
                    Delivery.channel,
                    Delivery.category,
                    Delivery.sent_at,
                    Delivery.created_at,
                    Delivery.dedupe_key,
                    Delivery.payload,
                    Delivery.run_id,
                    Delivery.enrollment_id,
                    Campaign.name.label("campaign"),
                ).join(Campaign, Campaign.id == Delivery.campaign_id)
            )
        ]


def _members(sessions) -> dict[int, dict[str, Any]]:
    with sessions() as session:
        return {
            row.id: dict(row._mapping)
            for row in session.execute(
                select(Member.id, Member.time_zone, Member.tier, Member.purchases_count)
            )
        }


def _local(instant: datetime, member: dict[str, Any]) -> datetime:
    return instant.astimezone(zoneinfo.ZoneInfo(member["time_zone"] or "America/New_York"))


def _check_reminders(rows, members, redeemed) -> None:
    reminders = [r for r in rows if r["campaign"] == "points-expiry"]
    assert len(reminders) > 3000
    keys = Counter(
        (r["member_id"], r["payload"]["expiry_date"], r["payload"]["lead_days"]) for r in reminders
    )
    assert set(keys.values()) == {1}
    leads = Counter(r["payload"]["lead_days"] for r in reminders)
    assert set(leads) == {30, 7, 1}
    for row in reminders:
        payload = row["payload"]
        expires_at = datetime.fromisoformat(payload["expires_at"])
        if row["status"] == "sent":
            # never after the expiry, and not before the lead date (member-local)
            assert row["sent_at"] < expires_at, row
            local_day = _local(row["sent_at"], members[row["member_id"]]).date()
            days_left = (date.fromisoformat(payload["expiry_date"]) - local_day).days
            why = (row, members[row["member_id"]], local_day)
            assert 0 <= days_left <= payload["lead_days"], why
            # none after the member redeemed those points
            if row["member_id"] in redeemed:
                when, instants = redeemed[row["member_id"]]
                if expires_at in instants:
                    assert row["sent_at"] < when, row
    after_redemption = [
        r
        for r in reminders
        if r["member_id"] in redeemed
        and datetime.fromisoformat(r["payload"]["expires_at"]) in redeemed[r["member_id"]][1]
        and r["status"] == "suppressed"
    ]
    assert {r["reason"] for r in after_redemption} <= {"no_longer_due", "consent", "unreachable"}
    assert any(r["reason"] == "no_longer_due" for r in after_redemption)
    # every deadline in the month reached its one-day reminder (sent or a recorded reason)
    one_day = {k[:2] for k in keys if k[2] == 1}
    week = {k[:2] for k in keys if k[2] == 7}
    assert len(one_day) > 500
    assert len(week) > 500


def _check_welcome(sessions, rows, members, enrolled_at) -> None:
    steps = [r for r in rows if r["campaign"] == "welcome"]
    with sessions() as session:
        enrollments = {e.id: e for e in session.scalars(select(Enrollment)).all()}
    assert {e.member_id for e in enrollments.values()} == set(enrolled_at)
    assert len(steps) == 3 * len(enrollments)
    offsets = {0: timedelta(0), 1: timedelta(days=2), 2: timedelta(days=7)}
    for row in steps:
        enrollment = enrollments[row["enrollment_id"]]
        step = row["payload"]["step"]
        member = members[row["member_id"]]
        due = enrollment.enrolled_at + offsets[step]
        if row["status"] == "sent":
            assert row["sent_at"] >= due, row
        if due > END - STEP:  # not due yet when the month ended: still waiting
            assert (row["status"], row["reason"]) == ("deferred", "scheduled"), row
            continue
        if step == 1 and member["purchases_count"] > 0:
            assert (row["status"], row["reason"]) == ("suppressed", "step_condition"), row
        if step == 2 and member["tier"] not in ("gold", "platinum"):
            assert (row["status"], row["reason"]) == ("suppressed", "step_condition"), row
        if row["status"] in ("pending", "deferred"):  # due, waiting for its window or a slot
            assert row["reason"] in ("quiet_hours", "frequency_cap"), row
    first = Counter(r["status"] for r in steps if r["payload"]["step"] == 0)
    assert set(first) <= {"sent", "suppressed"}  # the first step went at enrollment
    assert first["sent"] > ENROLLEES // 2


def _check_weekly(sessions, rows, members) -> None:
    weekly = [r for r in rows if r["campaign"] == "weekly"]
    with sessions() as session:
        runs = session.scalars(
            select(CampaignRun.occurrence)
            .join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .where(Campaign.name == "weekly")
            .order_by(CampaignRun.id)
        ).all()
    assert [occurrence[:10] for occurrence in runs] == [
        "2026-11-30",
        "2026-12-07",
        "2026-12-14",
        "2026-12-21",
        "2026-12-28",
    ]
    per_run = Counter((r["run_id"], r["member_id"]) for r in weekly)
    assert set(per_run.values()) == {1}
    zones = set()
    for row in weekly:
        if row["status"] != "sent":
            continue
        local = _local(row["sent_at"], members[row["member_id"]])
        zones.add(members[row["member_id"]]["time_zone"])
        # each member at their own Monday 10:00 (the clock steps an hour at a time)
        assert local.weekday() == 0, row
        assert time(10, 0) <= local.time() < time(11, 0), row
    assert len(zones) >= 4
    capped = Counter(r["reason"] for r in weekly if r["status"] == "suppressed")
    assert capped["frequency_cap"] > 0


def _check_caps_and_quiet_hours(sent, members) -> None:
    marketing: dict[int, list[datetime]] = defaultdict(list)
    sms_days: Counter[tuple[int, date]] = Counter()
    for row in sent:
        member = members[row["member_id"]]
        if row["category"] == "marketing":
            marketing[row["member_id"]].append(row["sent_at"])
        if row["channel"] == "sms":
            local = _local(row["sent_at"], member)
            assert time(8, 0) <= local.time() < time(21, 0), row  # quiet hours kept
            sms_days[(row["member_id"], local.date())] += 1
    for member_id, instants in marketing.items():
        instants.sort()
        for i, start in enumerate(instants):
            window = [t for t in instants[i:] if t < start + timedelta(days=7)]
            assert len(window) <= MARKETING_CAP, (member_id, instants)
    assert max(sms_days.values()) == 1
