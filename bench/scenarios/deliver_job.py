"""Scenario ``deliver``: the plan and deliver jobs alone, in this process, per row.

A broadcast's throughput (scenario c) mixes the jobs' cost with what runs
beside them on the same cores: the fakes, the plan, the other worker
threads, the database. The CPU one job spends per row, alone in this
process, is the figure to compare before and after a change to the path
every message takes (runs made back to back: it still moves with the
machine).

For each campaign kind of ``--channels`` and each of ``--repeat`` passes:

1. a marketing broadcast to the first ``--deliver-rows`` members (a segment
   on ``id``) is created and claimed by the scheduler's ``tick``;
2. :func:`workers.planning.plan_run` writes its rows here, no broker;
3. :func:`workers.delivery.deliver_batch` is called here over those rows in
   batches of ``--batch-size``, as one worker thread runs deliver jobs, with
   the live channels pointed at the provider fakes, which run in a process
   of their own (:mod:`bench.fake_servers`) so that their CPU is not counted;
4. the fakes must have accepted exactly the recipients the ledger says were
   sent; then the run's rows are deleted and the table vacuumed, so that
   every pass starts from the same table.

The garbage collector is set up first as a worker process sets it up at
boot (:func:`workers.middleware.freeze_boot_objects`: what is alive then
frozen, young objects collected less often). Per row: the wall time,
the CPU time of this thread (the job itself), of this process (adding the
Twilio send pool's threads) and, when PostgreSQL runs on this machine, of
the database server. The pass with the median
deliver thread CPU is reported (the first pass pays for connections and
template compiling).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select

from scheduler.ticks import tick
from store import Delivery
from workers.catalog import create_campaign
from workers.delivery import deliver_batch
from workers.jobs import QUEUES
from workers.middleware import freeze_boot_objects
from workers.planning import plan_run
from workers.runtime import Runtime, program_for

from ..environment import BenchEnv
from ..fake_servers import FakeServers
from ..meters import DatabaseCpu, check_intake
from ..ours import sent_recipients, write_campaign
from ..report import ScenarioResult
from .broadcast import KINDS
from .capped_world import discard_run

__all__ = ["DEFAULT_ROWS", "run"]

#: Members each pass plans and delivers, unless ``--deliver-rows`` says otherwise.
DEFAULT_ROWS = 20_000


@dataclass(frozen=True)
class Phase:
    """What one job phase cost, in total over its rows."""

    rows: int
    wall: float
    thread_cpu: float
    process_cpu: float
    db_cpu: float | None

    def per_row(self, seconds: float) -> float:
        """Microseconds a row."""
        return 1e6 * seconds / max(self.rows, 1)


@dataclass(frozen=True)
class Pass:
    plan: Phase
    deliver: Phase
    statuses: dict[str, int]


class _Clock:
    """Wall, this thread's, this process's and the database's time over a ``with`` block."""

    def __init__(self, env: BenchEnv) -> None:
        self._db = DatabaseCpu(env.engine)
        self._process = psutil.Process()

    def __enter__(self) -> _Clock:
        self._db.__enter__()
        self._start = (time.perf_counter(), time.thread_time(), self._process_cpu())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, thread, process = time.perf_counter(), time.thread_time(), self._process_cpu()
        self._db.__exit__()
        self.wall = wall - self._start[0]
        self.thread_cpu = thread - self._start[1]
        self.process_cpu = process - self._start[2]
        self.db_cpu = self._db.seconds

    def phase(self, rows: int) -> Phase:
        return Phase(rows, self.wall, self.thread_cpu, self.process_cpu, self.db_cpu)

    def _process_cpu(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)


def run(
    env: BenchEnv, kinds: Sequence[str] = tuple(KINDS), rows: int = DEFAULT_ROWS
) -> ScenarioResult:
    """Plan and deliver ``rows`` members' messages for each of ``kinds``, ``--repeat`` times."""
    first = env.audience(min(rows, env.members))
    passes: dict[str, list[Pass]] = {}
    with FakeServers(env.options.validate_every) as fakes:
        settings = env.provider_settings(
            twilio_url=fakes.twilio_url, sendgrid_url=fakes.sendgrid_url
        )
        runtime = Runtime(settings, broker=None, program=program_for(settings))
        # As a worker process does before its threads start (workers.main's FrozenBoot);
        # undone after, so the scenarios that follow in this process run as before.
        thresholds = gc.get_threshold()
        freeze_boot_objects()
        try:
            for kind in kinds:
                passes[kind] = []
                for number in range(1, env.options.repeat + 1):
                    done = _pass(env, runtime, fakes, kind, number, first[-1])
                    env.console.print(
                        f"  {kind} (pass {number}): {done.deliver.rows:,} rows,"
                        f" deliver {done.deliver.per_row(done.deliver.thread_cpu):,.0f} us"
                        f" thread CPU a row, plan {done.plan.per_row(done.plan.thread_cpu):,.0f} us"
                    )
                    passes[kind].append(done)
        finally:
            runtime.close()
            gc.unfreeze()
            gc.set_threshold(*thresholds)
    return _result(env, passes, len(first))


def _pass(
    env: BenchEnv, runtime: Runtime, fakes: FakeServers, kind: str, number: int, last_id: int
) -> Pass:
    segment = f"segment: {{field: id, op: '<=', value: {last_id}}}\n"
    path = write_campaign(env, f"deliver-{kind}-{number}", KINDS[kind], extra=segment)
    created = create_campaign(env.sessions, path, program=runtime.program)
    if created.run_id is None:
        raise RuntimeError(f"{path} made no run")
    run_id = created.run_id
    broker = StubBroker()  # the plan job runs here; its message is dropped with the broker
    for queue in QUEUES:
        broker.declare_queue(queue)
    if run_id not in tick(env.sessions, broker, runtime.program):
        raise RuntimeError(f"the tick did not claim run {run_id}")
    fakes.reset()

    with _Clock(env) as clock:
        planned = plan_run(runtime, run_id).written
    plan = clock.phase(planned)

    with env.engine.connect() as conn:
        ids = list(
            conn.scalars(select(Delivery.id).where(Delivery.run_id == run_id).order_by(Delivery.id))
        )
    size = env.options.batch_size
    with _Clock(env) as clock:
        for start in range(0, len(ids), size):
            deliver_batch(runtime, ids[start : start + size])
    deliver = clock.phase(len(ids))

    with env.engine.connect() as conn:
        statuses = {
            str(status): int(n)
            for status, n in conn.execute(
                select(Delivery.status, func.count())
                .where(Delivery.run_id == run_id)
                .group_by(Delivery.status)
            ).all()
        }
        expected = sent_recipients(conn, run_id)
    check_intake(f"deliver {kind} pass {number}", fakes.snapshot(), expected)
    discard_run(env, run_id)
    return Pass(plan, deliver, statuses)


def _result(env: BenchEnv, passes: dict[str, list[Pass]], members: int) -> ScenarioResult:
    result = ScenarioResult(
        "deliver",
        f"the plan and deliver jobs in one process, per row, {members:,} members a pass",
    )
    for kind, runs in passes.items():
        done = sorted(runs, key=lambda p: p.deliver.thread_cpu / max(p.deliver.rows, 1))[
            len(runs) // 2
        ]
        for name, phase in (("plan", done.plan), ("deliver", done.deliver)):
            row = result.row(f"{kind} {name}")
            row.add("rows", phase.rows, "count")
            if name == "deliver":
                row.add("sent", done.statuses.get("sent", 0), "count")
                row.add("suppressed", done.statuses.get("suppressed", 0), "count")
            row.add("wall/row", phase.per_row(phase.wall), "us")
            row.add("thread CPU/row", phase.per_row(phase.thread_cpu), "us")
            row.add("process CPU/row", phase.per_row(phase.process_cpu), "us")
            if phase.db_cpu is not None:
                row.add("database CPU/row", phase.per_row(phase.db_cpu), "us")
    o = env.options
    result.notes += [
        f"{o.repeat} passes a kind, each on fresh rows (the last pass's deleted, the table"
        " vacuumed); the pass with the median deliver thread CPU a row is shown",
        f"deliver jobs of {o.batch_size} rows, one after another in one thread, as a worker"
        " thread runs them; process CPU adds the Twilio send pool's threads; the garbage"
        " collector set up as a worker process's at boot (workers.middleware)",
        "the fakes run in a process of their own (not counted); they validate 1 request in"
        f" {o.validate_every} against the providers' OpenAPI specs",
        "database CPU is the whole local PostgreSQL server's meanwhile",
    ]
    return result
