"""Baseline (i), the driver: enqueue one job per recipient and time the naive workers.

The bench process reads the campaign's audience in id order (the same
members our run had, up to ``--baseline-limit``) and sends one
``send_one`` message per member, one Redis round trip each, as a loop of
``actor.send(...)`` would. The clock starts before the first enqueue and
stops at the fakes' last accepted request; the run is over when
``bench_naive_sends`` holds a row per member. The worker side is
:mod:`bench.baselines.naive_worker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, Text, func, select

from loyalcast.processes import WorkerGroup
from loyalcast.settings import Settings
from store import Member

from ..environment import BenchEnv
from ..meters import DatabaseCpu, FakeMeter, Intake, RssSampler, recipient_key
from ..pool import running_workers

__all__ = ["ACTOR", "QUEUE", "SENDS", "NaiveRun", "measure_naive", "naive_workers"]

QUEUE = "naive"
ACTOR = "send_one"
METADATA = MetaData()
#: What the naive design records: one row per recipient, after the send.
SENDS = Table(
    "bench_naive_sends",
    METADATA,
    Column("id", BigInteger, primary_key=True),
    Column("member_id", BigInteger, nullable=False),
    Column("channel", String(16)),
    Column("status", String(16), nullable=False),
    Column("detail", Text),
    Column("provider_message_id", String(128)),
    Column("at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class NaiveRun:
    """What one naive run did."""

    members: int
    statuses: dict[str, int]
    enqueue_seconds: float
    seconds: float
    """From the first enqueue to the fakes' last accepted request."""
    intake: Intake
    peak_process_mib: float
    peak_total_mib: float
    cpu_seconds: float
    """CPU the worker processes used, from the first enqueue to the end."""
    db_cpu_seconds: float | None
    """CPU the PostgreSQL server used meanwhile; None when it is not on this machine."""
    recipients: Counter[str]
    """What ``bench_naive_sends`` says was sent (see :func:`bench.meters.check_intake`)."""

    @property
    def sent(self) -> int:
        return self.statuses.get("sent", 0)

    @property
    def throughput(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def _namespace(env: BenchEnv) -> str:
    return f"{env.namespace}-naive"


@contextlib.contextmanager
def naive_workers(env: BenchEnv, settings: Settings) -> Iterator[WorkerGroup]:
    """The naive baseline's worker processes (same count and threads as ours), consuming."""
    METADATA.create_all(env.engine)
    naive = dataclasses.replace(settings, queue_namespace=_namespace(env))
    with running_workers(
        env.child_env(naive),
        module="bench.baselines.naive_worker",
        queues=[QUEUE],
        processes=env.options.processes,
        threads=env.options.threads,
        log_file=env.log_file("naive-workers"),
        redis_url=env.options.redis_url,
        namespace=_namespace(env),
    ) as group:
        yield group


def measure_naive(
    env: BenchEnv,
    group: WorkerGroup,
    meter: FakeMeter,
    *,
    version_id: int,
    channels: Sequence[str],
    segment: object,
    limit: int,
    timeout: float,
) -> NaiveRun:
    """Send the first ``limit`` members of the audience their message, one job each."""
    with env.engine.begin() as conn:
        conn.execute(SENDS.delete())
    ids = env.audience(limit, segment)
    broker = RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq's brokers are untyped
        url=env.options.redis_url, namespace=_namespace(env)
    )
    meter.reset()
    assert group.pid is not None
    try:
        with RssSampler(group.pid) as rss, DatabaseCpu(env.engine) as db:
            started = time.time()
            for member_id in ids:
                broker.enqueue(
                    dramatiq.Message(
                        queue_name=QUEUE,
                        actor_name=ACTOR,
                        args=(member_id, version_id, list(channels)),
                        kwargs={},
                        options={},
                    )
                )
            enqueued = time.time()
            _wait_recorded(env, len(ids), timeout)
    finally:
        broker.close()
    intake = meter.snapshot()
    with env.engine.connect() as conn:
        statuses = {
            str(status): int(n)
            for status, n in conn.execute(
                select(SENDS.c.status, func.count()).group_by(SENDS.c.status)
            ).all()
        }
        recipients = Counter(
            recipient_key(str(channel), str(email if channel == "email" else phone))
            for channel, email, phone in conn.execute(
                select(SENDS.c.channel, Member.email, Member.phone)
                .join(Member, Member.id == SENDS.c.member_id)
                .where(SENDS.c.status == "sent")
            ).all()
        )
    end = intake.last_request_at or time.time()
    return NaiveRun(
        members=len(ids),
        statuses=statuses,
        enqueue_seconds=enqueued - started,
        seconds=end - started,
        intake=intake,
        peak_process_mib=rss.peak_process_mib,
        peak_total_mib=rss.peak_total_mib,
        cpu_seconds=rss.cpu_seconds,
        db_cpu_seconds=db.seconds,
        recipients=recipients,
    )


def _wait_recorded(env: BenchEnv, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with env.engine.connect() as conn:
            done = int(conn.scalar(select(func.count()).select_from(SENDS)) or 0)
        if done >= expected:
            return
        time.sleep(0.5)
    raise TimeoutError(
        f"the naive baseline recorded fewer than {expected} sends in {timeout:.0f} s"
    )
