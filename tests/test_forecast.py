"""Campaign forecasts: the numbers equal what the real run then does, and nothing is written.

Each test builds a 400-member program with mixed consents, reachability, time
zones and postal addresses; quiet hours and three frequency caps are on, and
earlier campaigns have already used some members' cap slots (some of whose
Redis counters are then lost, so both the Redis and the ledger paths count).
The campaign is forecast, then created, planned and delivered for real
in-process with scripted channels and the clock fixed, and the forecast's
counts by outcome must equal the ledger's. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from channels import Message, Receipt
from scheduler import claim_due_runs
from store import Campaign, Delivery, DeliveryStatus, set_clock, utcnow
from store.models import Base
from workers.delivery import deliver_batch
from workers.forecast import forecast
from workers.planning import plan_run
from workers.program import CapRule, Program, QuietHours

from .support import (
    ScriptedChannel,
    add_member,
    create,
    runtime_for,
    scripted_channels,
    sessions_for,
)

pytestmark = pytest.mark.redis

ZONES = ["UTC", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "Australia/Sydney", None]
CAPS = (
    CapRule(
        name="marketing-weekly",
        scope="all",
        window=timedelta(days=7),
        limit=3,
        categories=frozenset({"marketing"}),
    ),
    CapRule(
        name="daily-all",
        scope="all",
        window="calendar_day",
        limit=2,
        categories=frozenset({"marketing"}),
    ),
    CapRule(
        name="sms-daily",
        scope="sms",
        window="calendar_day",
        limit=1,
        categories=frozenset({"marketing", "service"}),
    ),
)
PROGRAM = Program(
    quiet_hours={
        "sms": QuietHours(start=time(21), end=time(8)),
        "push": QuietHours(start=time(22), end=time(7)),
    },
    caps=CAPS,
)
#: The SMS part is overridden for the test: members without a ``store`` attribute fail to render.
SMS_TEXT = "{{ member.attributes.store }}: double points, {{ member.first_name or 'friend' }}!\n"


class ClockedChannel(ScriptedChannel):
    """A scripted channel whose receipts carry the store's (simulated) clock, as a provider's
    acceptance time would follow the real one: the ledger then dates each send in the test's time.
    """

    def send(self, message: Message) -> Receipt:
        receipt = super().send(message)
        return Receipt(provider_message_id=receipt.provider_message_id, accepted_at=utcnow())


def _pick(rng: random.Random, weights: dict[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def populate(sessions, n: int = 400, seed: int = 11) -> None:
    """``n`` members: ~85% gold, mixed consents, contact details, zones, devices, addresses."""
    rng = random.Random(seed)
    shared_address = {
        "address_line1": "1 Main St",
        "address_city": "Springfield",
        "address_state": "IL",
        "address_zip": "62701",
        "address_country": "US",
    }
    with sessions.begin() as s:
        for i in range(n):
            consents = {}
            for channel, weights in {
                "email": {"opted_in": 0.6, "opted_out": 0.1, None: 0.3},
                "sms": {"opted_in": 0.5, "opted_out": 0.15, None: 0.35},
                "push": {"opted_in": 0.5, None: 0.5},
                "direct_mail": {"opted_in": 0.4, None: 0.6},
            }.items():
                status = _pick(rng, weights)
                if status is not None:
                    consents[channel] = status
            address: dict[str, Any] = {}
            roll = rng.random()
            if roll < 0.1:
                address = dict(shared_address)  # one household, many members
            elif roll < 0.35:
                address = {**shared_address, "address_line1": f"{i} Elm St"}
            add_member(
                s,
                consents=consents,
                push_token=f"tok-{i}" if rng.random() < 0.5 else None,
                email=_pick(rng, {f"f{i}@example.com": 0.8, None: 0.1, "not-an-email": 0.1}),
                phone=_pick(rng, {f"+1212555{i:04d}": 0.7, None: 0.15, "+1555": 0.15}),
                time_zone=ZONES[i % len(ZONES)],
                tier="gold" if i < 40 or rng.random() < 0.85 else "basic",
                attributes={} if i >= 60 and i % 23 == 0 else {"store": "Main St"},
                **address,
            )


def write(tmp_path: Path, name: str, channels: str, schedule: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: broadcast\ncategory: marketing\n"
        "segment: {all: [{field: tier, op: in, value: [gold]}]}\n"
        f"channels: {channels}\ntemplate: winter-double-points\n"
        f"schedule: {schedule}\n{extra}"
    )
    return path


def run_for_real(rt, sessions, path: Path, batch: int) -> None:
    """Create, claim, plan, then deliver every row at its own instant (the clock set to it)."""
    created = create(sessions, path)
    set_clock(lambda: created.due_at)
    claim_due_runs(sessions)
    plan_run(rt, created.run_id)
    while True:
        with sessions() as s:
            open_rows = s.execute(
                select(Delivery.id, Delivery.not_before)
                .where(
                    Delivery.run_id == created.run_id,
                    (Delivery.status == DeliveryStatus.PENDING) | (Delivery.reason == "scheduled"),
                )
                .order_by(Delivery.not_before, Delivery.id)
            ).all()
        if not open_rows:
            return
        moment = open_rows[0].not_before or created.due_at
        set_clock(lambda moment=moment: max(moment, created.due_at))
        due = [row.id for row in open_rows if (row.not_before or created.due_at) <= moment]
        for i in range(0, len(due), batch):
            deliver_batch(rt, due[i : i + batch])


def ledger(sessions, name: str) -> dict[tuple[str, str | None], int]:
    with sessions() as s:
        rows = s.execute(
            select(Delivery.status, Delivery.reason, func.count())
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.name == name)
            .group_by(Delivery.status, Delivery.reason)
        ).all()
    return {(status, reason): n for status, reason, n in rows}


def sent_by_channel(sessions, name: str) -> dict[str, int]:
    with sessions() as s:
        rows = s.execute(
            select(Delivery.channel, func.count())
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.name == name, Delivery.status == DeliveryStatus.SENT)
            .group_by(Delivery.channel)
        ).all()
    return {channel: n for channel, n in rows}


def store_snapshot(sessions) -> dict[str, int]:
    with sessions() as s:
        return {
            table.name: s.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def redis_snapshot(client: redis.Redis, namespace: str) -> dict[bytes, Any]:
    found: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"{namespace}*", count=1000):
        kind = client.type(key)
        value = client.zrange(key, 0, -1, withscores=True) if kind == b"zset" else client.get(key)
        found[key] = (value, client.pttl(key) > 0)
    return found


@pytest.fixture
def world(database_url, tmp_path, redis_url, redis_namespace):
    """Members, the SMS override, a capped runtime, and two earlier campaigns already sent."""
    sessions = sessions_for(database_url)
    populate(sessions)
    (tmp_path / "templates" / "winter-double-points").mkdir(parents=True)
    (tmp_path / "templates" / "winter-double-points" / "sms.text.j2").write_text(SMS_TEXT)
    channels = {name: ClockedChannel(name) for name in ("sms", "email", "push", "direct_mail")}
    rt = runtime_for(
        database_url,
        tmp_path,
        channels=channels,
        program=PROGRAM,
        redis_url=redis_url,
        queue_namespace=redis_namespace,
        batch_size=100,
    )
    # Earlier campaigns use cap slots: email on 29 Nov and 1 Dec, push else sms on 30 Nov.
    for name, channel_list, at in [
        ("warmup-1", "[email]", "2026-11-29T12:00Z"),
        ("warmup-2", "[push, sms]", "2026-11-30T15:00Z"),
        ("warmup-3", "[email]", "2026-12-01T06:00Z"),
    ]:
        run_for_real(rt, sessions, write(tmp_path, name, channel_list, f'{{at: "{at}"}}'), 100)
    # Redis loses some members' counters: their marker, or everything.
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{redis_namespace}:cap:*", count=1000):
        member_id = int(key.decode().split("{")[1].split("}")[0])
        if member_id % 5 == 0 or (member_id % 3 == 0 and b":ready:" in key):
            client.delete(key)
    yield sessions, rt, channels, client
    set_clock(None)
    client.close()
    rt.close()


def test_a_forecast_equals_the_run_at_a_fixed_instant(world, tmp_path, redis_namespace):
    """At 13:30 UTC: Tokyo and Sydney members are in SMS/push quiet hours, caps bite, the
    forecast's counts by outcome and per channel are what the run then records."""
    sessions, rt, channels, client = world
    path = write(tmp_path, "winter", "[push, sms, email, direct_mail]", '{at: "2026-12-01T13:30Z"}')
    set_clock(lambda: datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    rows_before, keys_before = store_snapshot(sessions), redis_snapshot(client, redis_namespace)

    # When the campaign is forecast
    result = forecast(rt, path)

    # Then nothing was written, to the store or to Redis
    assert store_snapshot(sessions) == rows_before
    assert redis_snapshot(client, redis_namespace) == keys_before
    assert result.at == datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
    # And every outcome the test means to exercise occurs
    for status, reason in [
        ("sent", None),
        ("deferred", "quiet_hours"),
        ("suppressed", "consent"),
        ("suppressed", "unreachable"),
        ("suppressed", "frequency_cap"),
        ("suppressed", "household"),
        ("failed", "render_error"),
    ]:
        assert result.outcomes.get((status, reason), 0) > 0, (status, reason)

    # When the campaign then runs for real
    for channel in channels.values():
        channel.sent.clear()
    run_for_real(rt, sessions, path, rt.settings.batch_size)

    # Then the ledger holds exactly the forecast's counts, and the same split per channel
    assert ledger(sessions, "winter") == result.outcomes
    assert sent_by_channel(sessions, "winter") == result.channels
    assert result.audience == result.deliveries == sum(result.outcomes.values())
    # And the ETA drains each provider's bucket at its configured rate from 13:30
    at = datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
    eta = {e.channel: e for e in result.eta}
    assert eta["sms"].rates == {"twilio": 1.0}
    assert eta["sms"].finishes_at == at + timedelta(seconds=result.channels["sms"])
    assert eta["email"].finishes_at == at + timedelta(seconds=result.channels["email"] / 50.0)
    assert eta["direct_mail"].finishes_at == at
    # And each sample render is the message that member was then sent
    sent = {(m.channel, m.to): m.parts for ch in channels.values() for m in ch.sent}
    for channel, samples in result.samples.items():
        assert len(samples) == min(3, result.channels[channel])
        for sample in samples:
            assert sent[(channel, sample.to)] == sample.parts


def test_a_member_local_forecast_equals_the_run_on_every_channel(world, tmp_path, redis_namespace):
    """`channels: all` at 10:00 member-local: each member decided at their own instant, the
    daily and weekly caps reached mid-member, email quiet hours; counts equal the ledger's."""
    sessions, rt, _, client = world
    path = write(
        tmp_path,
        "local",
        "all",
        '{at: "2026-12-01T10:00", timezone: member}',
        extra="quiet_hours: {email: {start: '09:30', end: '10:30'}}\n",
    )
    set_clock(lambda: datetime(2026, 11, 30, 16, 0, tzinfo=UTC))
    rows_before, keys_before = store_snapshot(sessions), redis_snapshot(client, redis_namespace)

    result = forecast(rt, path)

    assert store_snapshot(sessions) == rows_before
    assert redis_snapshot(client, redis_namespace) == keys_before
    assert result.deliveries == 4 * result.audience
    assert result.outcomes[("deferred", "quiet_hours")] > 0
    assert result.capped_by_rule.keys() >= {"marketing-weekly", "daily-all"}
    run_for_real(rt, sessions, path, rt.settings.batch_size)
    assert ledger(sessions, "local") == result.outcomes
    assert sum(sent_by_channel(sessions, "local").values()) == sum(result.channels.values())


def test_kinds_without_a_known_audience_say_why_they_are_not_forecast(database_url, tmp_path):
    """A welcome sequence is reported not forecastable, with the reason, not a wrong number."""
    rt = runtime_for(database_url, tmp_path, channels=scripted_channels())
    path = tmp_path / "welcome.yaml"
    path.write_text(
        "name: welcome\nkind: welcome_sequence\ncategory: marketing\nchannels: [email]\n"
        "steps:\n  - {after: 0m, template: winter-double-points}\n"
    )
    result = forecast(rt, path)
    assert (result.forecastable, result.audience) == (False, 0)
    assert "enroll" in (result.reason or "")
    assert result.to_dict()["reason"] == result.reason


def test_the_cli_forecasts_as_a_table_or_json_and_refuses_a_bad_instant(
    tmp_path, sqlite_url, monkeypatch
):
    """`campaigns forecast FILE --json` gives the counts; the table names the outcomes; a bad
    --at stops with exit 2; nothing is stored."""
    import json
    import os

    from typer.testing import CliRunner

    from loyalcast.cli import _common, app

    # In-process: keep the command from pointing this process's logging at the runner's streams.
    monkeypatch.setattr(_common, "configure_logging", lambda _level: None)

    env = {k: None for k in os.environ if k.startswith("LOYALCAST_")}
    env.update(
        {
            "LOYALCAST_DATA_DIR": str(tmp_path / "data"),
            "LOYALCAST_DATABASE_URL": sqlite_url,
            "LOYALCAST_LOG_LEVEL": "WARNING",
        }
    )

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, list(args), env=env)

    sessions = sessions_for(sqlite_url)
    with sessions.begin() as s:
        add_member(s, name="Mo One", time_zone="UTC", consents={"sms": "opted_in"})
        add_member(s, name="Mo Two", time_zone="UTC", consents={"sms": "opted_out"}, email=None)
        add_member(s, name="Mo Three", time_zone="UTC", phone=None)
    rows_before = store_snapshot(sessions)
    path = write(tmp_path, "cli", "[sms, email]", '{at: "2026-12-01T15:00Z"}')
    result = run("campaigns", "forecast", str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["audience"] == 3
    assert data["channels"] == {"email": 1, "sms": 1}
    assert data["suppressed"] == {"consent": 1}
    assert data["eta"][0]["rates"] == {"sendgrid": 50.0}
    assert data["at"] == "2026-12-01T15:00:00+00:00"
    assert data["samples"]["sms"][0]["parts"]["text"].startswith("Double points this weekend, Mo!")
    table = run("campaigns", "forecast", str(path), "--at", "2026-12-01T23:30:00+00:00")
    assert table.exit_code == 0, table.output
    assert "quiet_hours" in table.stdout
    assert "sample renders" in table.stdout
    bad = run("campaigns", "forecast", str(path), "--at", "2026-12-01T10:00")
    assert bad.exit_code == 2
    assert "give the UTC offset" in bad.stderr
    assert store_snapshot(sessions) == rows_before
