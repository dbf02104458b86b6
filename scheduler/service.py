"""The scheduler process: wait to lead, then tick and sweep on APScheduler timers.

Only the holder of the leader lock runs timers. Standbys poll the lock every
third of its TTL; the leader renews it as often and stops its timers the
moment a renewal fails. Each process has its own in-memory APScheduler job
store: a job store shared by two schedulers fires every job twice (DESIGN.md).

``misfire_grace_time`` is ``None`` on purpose: a tick or sweep that starts late
(a busy machine, a GC pause, a standby just promoted) must still run, never be
skipped silently as APScheduler's 1-second default would do. ``coalesce``
folds a backlog of missed runs into one, and ``max_instances=1`` keeps a slow
tick from overlapping the next. Ticks are idempotent, so running late or
twice is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import dramatiq
import redis
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from loyalcast.settings import Settings
from workers.jobs import enqueue_sweep
from workers.runtime import program_for

from .leader import LeaderLock
from .ticks import tick

__all__ = ["JOB_DEFAULTS", "SchedulerService"]

log = structlog.get_logger(__name__)

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


class SchedulerService:
    """One scheduler process: leader election plus the tick and sweep timers."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        broker: dramatiq.Broker,
        client: redis.Redis,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.broker = broker
        self.lock = LeaderLock(
            client, f"{settings.queue_namespace}:scheduler-leader", settings.leader_ttl_seconds
        )
        self.on_change = on_change or (lambda _: None)
        self.program = program_for(settings)
        self.stopping = threading.Event()
        self.leading = False

    def _tick(self) -> None:
        claimed = tick(self.sessions, self.broker, self.program)
        if claimed:
            log.info("claimed due runs", runs=claimed)

    def _sweep(self) -> None:
        enqueue_sweep(self.broker, max_age_ms=int(self.settings.sweep_seconds * 1000))

    def _start_timers(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2)}, job_defaults=JOB_DEFAULTS, timezone="UTC"
        )
        scheduler.add_job(self._tick, "interval", seconds=self.settings.tick_seconds, id="tick")
        scheduler.add_job(self._sweep, "interval", seconds=self.settings.sweep_seconds, id="sweep")
        scheduler.start()
        # Run both at once on promotion rather than one interval later.
        self._tick()
        self._sweep()
        return scheduler

    def run(self) -> None:
        """Block until ``stop()``: stand by, lead when the lock is free, step down if it is lost."""
        interval = self.settings.leader_ttl_seconds / 3
        while not self.stopping.is_set():
            if not self.lock.acquire():
                self.stopping.wait(interval)
                continue
            self.leading = True
            self.on_change("leader")
            log.info("leading", lock=self.lock.key)
            timers = self._start_timers()
            try:
                while not self.stopping.wait(interval):
                    if not self.lock.renew():
                        log.warning("lost the leader lock; standing by")
                        break
            finally:
                timers.shutdown(wait=True)
                self.leading = False
                self.lock.release()
                self.on_change("standby")

    def stop(self) -> None:
        """Ask ``run()`` to return after releasing the lock."""
        self.stopping.set()
