"""Real processes on a real Redis: dramatiq workers and schedulers, killed and flushed.

These are the crash-safety promises of DESIGN.md §1-3 and §10, tested the way
they fail in production: SIGKILL to a worker group in the middle of a batch,
Redis losing its contents in the middle of a run, two schedulers at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, insert, select

from channels import read_outbox
from store import CampaignRun, Consent, Delivery, Member, RunStatus, make_engine, make_sessionmaker

from .support import create, write_campaign

pytestmark = [pytest.mark.slow, pytest.mark.redis]

LOYALCAST = str(Path(sys.executable).parent / "loyalcast")


def _seed(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            insert(Member),
            [
                {
                    "external_id": f"P{i:06d}",
                    "name": f"Member {i}",
                    "email": f"p{i}@example.com",
                    "locale": "en_US",
                    "tier": "gold",
                    "points_balance": 900,
                    "attributes": {},
                }
                for i in range(count)
            ],
        )
        ids = conn.scalars(select(Member.id)).all()
        conn.execute(
            insert(Consent),
            [
                {"member_id": i, "channel": "email", "status": "opted_in", "source": "test"}
                for i in ids
            ],
        )
    engine.dispose()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _run_status(database_url: str, run_id: int) -> str:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        status = conn.scalar(select(CampaignRun.status).where(CampaignRun.id == run_id))
    engine.dispose()
    return str(status)


def _outbox_lines(tmp_path: Path) -> int:
    path = tmp_path / "outbox" / "email.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def _assert_once_each(database_url: str, tmp_path: Path, members: int) -> Counter[str]:
    """Every member has one row; sent rows have exactly one line, unknown rows at most one."""
    lines = Counter(line["delivery_id"] for line in read_outbox(tmp_path / "outbox", "email"))
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as s:
        rows = list(s.execute(select(Delivery.id, Delivery.member_id, Delivery.status)).all())
    assert len(rows) == members
    assert len({member for _, member, _ in rows}) == members
    assert max(lines.values()) == 1, "a message was written twice"
    for delivery_id, _member, status in rows:
        if status == "sent":
            assert lines[delivery_id] == 1
        else:
            assert status == "unknown", f"delivery {delivery_id} ended {status}"
            assert lines[delivery_id] <= 1
    return Counter(status for _, _, status in rows)


def _campaign(database_url: str, tmp_path: Path) -> int:
    sessions = make_sessionmaker(make_engine(database_url))
    created = create(sessions, write_campaign(tmp_path, channels="[email]"))
    assert created.run_id is not None
    return created.run_id


def test_a_broadcast_goes_out_through_real_workers_and_scheduler(
    database_url, env, procs, tmp_path
):
    """Campaign file -> scheduler -> Redis -> dramatiq workers -> outbox, each member once."""
    # Given 1,200 consented members and a broadcast due now
    _seed(database_url, 1200)
    run_id = _campaign(database_url, tmp_path)
    # When a scheduler and a worker group run
    procs("scheduler", env)
    procs("workers", env)
    # Then the run completes with one sent row and one outbox line per member
    _wait(
        lambda: _run_status(database_url, run_id) == RunStatus.COMPLETED, 90, "the run to complete"
    )
    assert _assert_once_each(database_url, tmp_path, 1200) == Counter({"sent": 1200})


def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(
    database_url, env, procs, tmp_path
):
    """SIGKILL of all workers mid-batch, then a restart: each member one line or one unknown row."""
    # Given 4,000 members and a broadcast being delivered
    _seed(database_url, 4000)
    run_id = _campaign(database_url, tmp_path)
    procs("scheduler", env)
    workers = procs("workers", env)
    _wait(lambda: _outbox_lines(tmp_path) >= 300, 60, "the first messages")
    # When the whole worker group is SIGKILLed in the middle of the run
    workers.signal(signal.SIGKILL)  # type: ignore[attr-defined]
    workers.process.wait()  # type: ignore[attr-defined]
    written_at_kill = _outbox_lines(tmp_path)
    assert written_at_kill < 4000, "the run finished before the kill; make it bigger"
    # And new workers start
    procs("workers", env)
    # Then the run completes: nothing lost, nothing written twice
    _wait(
        lambda: _run_status(database_url, run_id) == RunStatus.COMPLETED, 120, "the run to complete"
    )
    counts = _assert_once_each(database_url, tmp_path, 4000)
    assert counts["sent"] + counts["unknown"] == 4000
    print(f"killed after {written_at_kill} lines; ended with {dict(counts)}")


def test_losing_redis_mid_run_is_repaired_by_the_sweeper(
    database_url, env, procs, tmp_path, redis_url, redis_namespace
):
    """Deleting all loyalcast keys from Redis mid-run: each member is still sent once."""
    # Given 3,000 members and a broadcast being delivered
    _seed(database_url, 3000)
    run_id = _campaign(database_url, tmp_path)
    procs("scheduler", env)
    procs("workers", env)
    _wait(lambda: _outbox_lines(tmp_path) >= 200, 60, "the first messages")
    # When Redis loses everything loyalcast had in it
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{redis_namespace}*", count=1000))
    assert keys, "nothing to flush: the run finished before the flush"
    client.delete(*keys)
    client.close()
    # Then the sweeper re-enqueues what was lost and the run completes, once per member
    _wait(
        lambda: _run_status(database_url, run_id) == RunStatus.COMPLETED, 120, "the run to complete"
    )
    counts = _assert_once_each(database_url, tmp_path, 3000)
    assert counts["sent"] + counts["unknown"] == 3000


def test_two_schedulers_fire_each_due_run_once(
    database_url, env, procs, tmp_path, redis_url, redis_namespace
):
    """Two scheduler processes enqueue each due run's plan job once, also across a failover."""
    # Given five campaigns due now and two schedulers
    _seed(database_url, 3)
    sessions = make_sessionmaker(make_engine(database_url))
    for i in range(5):
        create(sessions, write_campaign(tmp_path, name=f"due-{i}", channels="[email]"))
    first = procs("scheduler", env)
    second = procs("scheduler", env)
    client = redis.Redis.from_url(redis_url)
    plan_queue = f"{redis_namespace}:plan"

    def planned_runs() -> list[int]:
        import json

        messages = client.hvals(f"{plan_queue}.msgs")
        return sorted(json.loads(m)["args"][0] for m in messages)

    _wait(lambda: len(planned_runs()) >= 5, 30, "five plan jobs")
    time.sleep(2)  # several more ticks of both schedulers
    assert planned_runs() == [1, 2, 3, 4, 5]
    # When the leader dies without releasing its lock and a new run falls due
    holder = client.get(f"{redis_namespace}:scheduler-leader")
    assert holder is not None
    os.killpg(first.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    os.killpg(second.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
    os.killpg(second.pid, signal.SIGCONT)  # type: ignore[attr-defined]
    create(sessions, write_campaign(tmp_path, name="due-after-failover", channels="[email]"))
    # Then the survivor takes over once the lock expires and fires the new run once
    _wait(lambda: len(planned_runs()) >= 6, 30, "the survivor to fire the new run")
    time.sleep(2)
    assert planned_runs() == [1, 2, 3, 4, 5, 6]
    with sessions() as s:
        assert s.scalar(select(func.count()).where(CampaignRun.status == RunStatus.PLANNING)) == 6
    client.close()
