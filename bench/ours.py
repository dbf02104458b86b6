"""One of our broadcasts, end to end, timed: create, tick, plan, deliver, the fakes accepting.

The campaign file is written and created with
:func:`workers.catalog.create_campaign` (templates checked against sample
members, a run due now), then the clock starts and the scheduler's own
:func:`scheduler.ticks.tick` claims the run and enqueues its plan job. The
worker processes (already consuming) plan the rows and deliver them in
batches through the live SendGrid and Twilio channels, pointed at the fakes.

The run is over when it is planned and no row is ``pending`` or ``sending``
(``deferred`` rows wait for their time, as with quiet hours). The time
reported ends at the fakes' last accepted request, so the polling interval
is not part of it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dramatiq
from sqlalchemy import Connection, func, select

from loyalcast.processes import WorkerGroup
from loyalcast.settings import Settings
from scheduler.ticks import tick
from store import CampaignRun, Delivery, DeliveryStatus, Member, RunStatus
from workers.catalog import create_campaign
from workers.jobs import QUEUES
from workers.runtime import program_for

from .environment import BenchEnv
from .meters import DatabaseCpu, FakeMeter, Intake, RssSampler, recipient_key
from .pool import running_workers

__all__ = [
    "CAMPAIGN",
    "OurRun",
    "measure_broadcast",
    "our_workers",
    "sent_recipients",
    "write_campaign",
]

CAMPAIGN = """\
name: {name}
kind: broadcast
category: marketing
description: benchmark broadcast to every member ({channels})
channels: [{channels}]
template: winter-double-points
"""

_WORKING = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


@dataclass(frozen=True)
class OurRun:
    """What one of our broadcasts did and how long each part took."""

    run_id: int
    version_id: int
    planned: int
    statuses: dict[tuple[str, str | None], int]
    """(status, channel) -> rows."""
    seconds: float
    """From the tick to the fakes' last accepted request."""
    create_seconds: float
    plan_seconds: float
    first_send_seconds: float
    intake: Intake
    started_at: float
    peak_process_mib: float
    peak_total_mib: float
    cpu_seconds: float
    """CPU the worker processes used, from the tick to the end of the run."""
    db_cpu_seconds: float | None
    """CPU the PostgreSQL server used meanwhile; None when it is not on this machine."""
    recipients: Counter[str]
    """What the ledger says was sent, as :func:`bench.meters.check_intake` compares it."""

    def count(self, status: str, channel: str | None = None) -> int:
        return sum(n for (s, c), n in self.statuses.items() if s == status and channel in (None, c))

    @property
    def sent(self) -> int:
        return self.count(DeliveryStatus.SENT)

    @property
    def throughput(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def our_workers(env: BenchEnv, settings: Settings, log_name: str) -> Iterator[WorkerGroup]:
    """``dramatiq workers.main`` with ``--processes`` x ``--threads``, on every queue."""
    with running_workers(
        env.child_env(settings),
        module="workers.main",
        queues=QUEUES,
        processes=env.options.processes,
        threads=env.options.threads,
        log_file=env.log_file(log_name),
        redis_url=env.options.redis_url,
        namespace=env.namespace,
    ) as group:
        yield group


def write_campaign(env: BenchEnv, label: str, channels: Sequence[str], *, extra: str = "") -> Path:
    """Write the campaign file for ``channels``; return its path. Names are per invocation."""
    path = env.work_dir / f"bench-{label}.yaml"
    text = CAMPAIGN.format(name=f"bench-{label}-{env.token}", channels=", ".join(channels))
    path.write_text(text + extra)
    return path


def measure_broadcast(
    env: BenchEnv,
    settings: Settings,
    broker: dramatiq.Broker,
    group: WorkerGroup,
    meter: FakeMeter,
    campaign_file: Path,
) -> OurRun:
    """Create the campaign in ``campaign_file`` and time its run to the last send."""
    started_create = time.perf_counter()
    created = create_campaign(env.sessions, campaign_file, program=program_for(settings))
    create_seconds = time.perf_counter() - started_create
    if created.run_id is None:
        raise RuntimeError(f"{campaign_file} made no run")
    run_id = created.run_id
    meter.reset()
    assert group.pid is not None
    with RssSampler(group.pid) as rss, DatabaseCpu(env.engine) as db:
        started = time.time()
        claimed = tick(env.sessions, broker)
        if run_id not in claimed:
            raise RuntimeError(f"the tick did not claim run {run_id} (claimed {claimed})")
        _wait_done(env, run_id, group, env.options.run_timeout)
    intake = meter.snapshot()
    with env.engine.connect() as conn:
        run = conn.execute(select(CampaignRun).where(CampaignRun.id == run_id)).one()
        statuses = {
            (str(status), channel): int(n)
            for status, channel, n in conn.execute(
                select(Delivery.status, Delivery.channel, func.count())
                .where(Delivery.run_id == run_id)
                .group_by(Delivery.status, Delivery.channel)
            ).all()
        }
        recipients = sent_recipients(conn, run_id)
    # From the tick to the last page: the planner moves claimed_at on with every page.
    plan_seconds = run.planned_at.timestamp() - started if run.planned_at else 0.0
    end = intake.last_request_at or time.time()
    first = intake.first_request_at or end
    return OurRun(
        run_id=run_id,
        version_id=run.campaign_version_id,
        planned=run.planned_count,
        statuses=statuses,
        seconds=end - started,
        create_seconds=create_seconds,
        plan_seconds=plan_seconds,
        first_send_seconds=first - started,
        intake=intake,
        started_at=started,
        peak_process_mib=rss.peak_process_mib,
        peak_total_mib=rss.peak_total_mib,
        cpu_seconds=rss.cpu_seconds,
        db_cpu_seconds=db.seconds,
        recipients=recipients,
    )


def sent_recipients(conn: Connection, run_id: int) -> Counter[str]:
    """Who the ledger says run ``run_id`` sent to, as :func:`bench.meters.check_intake` compares."""
    return Counter(
        recipient_key(str(channel), str(email if channel == "email" else phone))
        for channel, email, phone in conn.execute(
            select(Delivery.channel, Member.email, Member.phone)
            .join(Member, Member.id == Delivery.member_id)
            .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENT)
        ).all()
    )


def _wait_done(env: BenchEnv, run_id: int, group: WorkerGroup, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with env.engine.connect() as conn:
            status = conn.scalar(select(CampaignRun.status).where(CampaignRun.id == run_id))
            if status in (RunStatus.PLANNED, RunStatus.COMPLETED):
                working = conn.scalar(
                    select(Delivery.id)
                    .where(Delivery.run_id == run_id, Delivery.status.in_(_WORKING))
                    .limit(1)
                )
                if working is None:
                    return
            elif status not in (RunStatus.SCHEDULED, RunStatus.PLANNING):
                raise RuntimeError(f"run {run_id} ended {status}")
        if not group.alive():
            raise RuntimeError(f"the workers died; see {group.log_file}")
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} was not done after {timeout:.0f} s; see {group.log_file}")
