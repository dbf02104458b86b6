"""Cancel, pause and resume: effective at once, on every worker."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, literal, select

from channels import read_outbox
from scheduler import claim_due_runs
from store import Campaign, CampaignRun, Consent, Delivery, Member, make_engine, make_sessionmaker
from workers.control import cancel_campaign, pause_campaign, resume_campaign
from workers.delivery import deliver_batch
from workers.planning import plan_run

from .support import (
    add_member,
    create,
    runtime_for,
    scripted_channels,
    sessions_for,
    write_campaign,
)
from .test_pipeline import _rows


def _planned(database_url: str, tmp_path: Path, members: int = 3):
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        for _ in range(members):
            add_member(s)
    created = create(sessions, write_campaign(tmp_path))
    claim_due_runs(sessions)
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, created.run_id)
    return sessions, rt, channels


def test_cancel_suppresses_every_open_delivery_and_nothing_is_sent(database_url, tmp_path):
    """After cancel returns, a deliver job for the campaign's rows sends nothing."""
    sessions, rt, channels = _planned(database_url, tmp_path)
    result = cancel_campaign(sessions, "test-broadcast")
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    assert result.suppressed == 3
    assert {(r.status, r.reason) for r in _rows(sessions)} == {("suppressed", "cancelled")}
    assert channels["email"].calls == 0
    with sessions() as s:
        assert s.scalar(select(CampaignRun.status)) == "cancelled"


def test_cancel_waits_for_a_chunk_already_at_the_provider(database_url, tmp_path):
    """A send in flight when cancel is called is recorded before cancel returns."""
    # Given a provider that takes a while to answer, and a deliver job in flight
    sessions, rt, channels = _planned(database_url, tmp_path, members=2)
    entered = threading.Event()

    def slow(_message: Any) -> None:
        entered.set()
        time.sleep(0.5)

    channels["email"].script = slow
    ids = [r.id for r in _rows(sessions)]
    job = threading.Thread(target=deliver_batch, args=(rt, ids))
    job.start()
    assert entered.wait(10)
    # When the campaign is cancelled mid-send
    cancel_campaign(sessions, "test-broadcast")
    returned = datetime.now(UTC)
    job.join()
    # Then every send happened before cancel returned, and nothing is left sending
    sent = [r for r in _rows(sessions) if r.status == "sent"]
    assert sent
    assert all(r.sent_at <= returned for r in sent)
    assert "sending" not in {r.status for r in _rows(sessions)}


def test_pause_holds_deliveries_and_resume_sends_them(database_url, tmp_path):
    """Paused rows wait with reason 'paused'; after resume they go out once."""
    sessions, rt, channels = _planned(database_url, tmp_path)
    assert pause_campaign(sessions, "test-broadcast") == 3
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    assert {(r.status, r.reason) for r in _rows(sessions)} == {("deferred", "paused")}
    assert channels["email"].calls == 0
    with sessions.begin() as s:  # a paused campaign's runs are not claimed either
        assert s.scalar(select(Campaign.status)) == "paused"
    assert resume_campaign(sessions, "test-broadcast") == 3
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    assert {r.status for r in _rows(sessions)} == {"sent"}
    assert len(channels["email"].sent) == 3


def test_a_cancelled_campaign_cannot_be_resumed(database_url, tmp_path):
    """Cancel is final."""
    sessions, _rt, _channels = _planned(database_url, tmp_path, members=1)
    cancel_campaign(sessions, "test-broadcast")
    with pytest.raises(ValueError, match="cancelled"):
        resume_campaign(sessions, "test-broadcast")


@pytest.mark.slow
@pytest.mark.redis
def test_cancel_in_the_middle_of_a_50000_member_broadcast(
    pg_url: str, redis_url: str, redis_namespace: str, procs: Any, tmp_path: Path
) -> None:
    """Workers busy on 50,000 members: after cancel returns, not one more message is written."""
    # Given 50,000 consented members and a broadcast going out through real workers
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            insert(Member),
            [
                {
                    "external_id": f"X{i:05d}",
                    "name": f"M {i}",
                    "email": f"x{i}@example.com",
                    "locale": "en_US",
                    "tier": "gold",
                    "points_balance": 900,
                    "attributes": {},
                }
                for i in range(50_000)
            ],
        )
        conn.execute(
            insert(Consent).from_select(
                ["member_id", "channel", "status", "source"],
                select(Member.id, literal("email"), literal("opted_in"), literal("test")),
            )
        )
    sessions = make_sessionmaker(engine)
    create(sessions, write_campaign(tmp_path, channels="[email]"))
    policy = tmp_path / "policy.yaml"
    policy.write_text("quiet_hours: {sms: null}\n")
    env = {
        **os.environ,
        "LOYALCAST_DATABASE_URL": pg_url,
        "LOYALCAST_REDIS_URL": redis_url,
        "LOYALCAST_QUEUE_NAMESPACE": redis_namespace,
        "LOYALCAST_DATA_DIR": str(tmp_path / "d"),
        "LOYALCAST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOYALCAST_TICK_SECONDS": "0.5",
        "LOYALCAST_SWEEP_SECONDS": "1",
        "LOYALCAST_LOG_LEVEL": "WARNING",
        "LOYALCAST_POLICY_FILE": str(policy),
    }
    procs("scheduler", env)
    procs("workers", env, processes=2, threads=4)
    outbox = tmp_path / "outbox" / "email.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not outbox.exists() or outbox.stat().st_size < 200_000):
        time.sleep(0.05)
    # When the campaign is cancelled while workers are sending
    result = cancel_campaign(sessions, "test-broadcast", timeout=60)
    returned = datetime.now(UTC)
    written_at_cancel = len(read_outbox(tmp_path / "outbox", "email"))
    time.sleep(3)  # every worker keeps running; give them every chance to send more
    # Then nothing was written after cancel returned, and every row is accounted for
    lines = read_outbox(tmp_path / "outbox", "email")
    assert len(lines) == written_at_cancel
    assert max(datetime.fromisoformat(str(line["written_at"])) for line in lines) <= returned
    assert 0 < written_at_cancel < 50_000
    with sessions() as s:
        counts = dict(
            s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    assert counts.get("sent", 0) == written_at_cancel
    assert set(counts) <= {"sent", "suppressed", "unknown"}, counts  # nothing left open
    assert result.suppressed > 0
    engine.dispose()


def test_retry_sends_failed_deliveries_again_once(database_url, tmp_path):
    """Failed deliveries that never reached a provider go out again, each once; others stay."""
    from sqlalchemy import update as sa_update

    from channels import TransientDeliveryError
    from workers.retry import retry_failed

    # Given a provider outage that exhausted every attempt for three members
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        for _ in range(3):
            add_member(s)
    created = create(sessions, write_campaign(tmp_path, max_attempts=1))
    claim_due_runs(sessions)
    outage = [True]
    channels = scripted_channels(lambda m: TransientDeliveryError("503") if outage[0] else None)
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, created.run_id)
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    assert {(r.status, r.reason) for r in _rows(sessions)} == {("failed", "retries_exhausted")}
    # And one of them had in fact been accepted and later reported undelivered
    undelivered = _rows(sessions)[0].id
    with sessions.begin() as s:
        s.execute(
            sa_update(Delivery)
            .where(Delivery.id == undelivered)
            .values(provider_message_id="SM-undelivered")
        )
    # When the outage is over and the operator retries the campaign's failures, twice
    outage[0] = False
    first = retry_failed(sessions, "test-broadcast")
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    second = retry_failed(sessions, "test-broadcast")
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then the two that never went out were sent once each; the undelivered one was left alone
    assert (first.reopened, first.left_alone) == (2, 1)
    assert (second.reopened, second.left_alone) == (0, 1)
    assert sorted(r.status for r in _rows(sessions)) == ["failed", "sent", "sent"]
    assert len(channels["email"].sent) == 2
    with sessions() as s:
        assert s.get(CampaignRun, created.run_id).status == "completed"
