"""A program run on a clock the test controls: the scheduler's tick, the sweeper and the
workers' actors, in one process, against the live channels and the provider fakes.

:class:`Simulation` installs a :class:`SimulatedClock` as ``store.utcnow`` and
then, for every step of simulated time, does what the scheduler leader and the
workers would do at that instant: :func:`scheduler.ticks.tick` (runs written,
claimed, plan jobs enqueued), :func:`workers.sweeping.sweep` (deferred rows
whose time came enqueued) and every queued job run to completion through the
real actors declared on a :class:`~dramatiq.brokers.stub.StubBroker`. A
delayed message (a retry) runs in the same step: the clock does not move
while jobs run. Events the test schedules (enrollments, redemptions) happen at
their instant, before that step's tick.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from scheduler.ticks import tick
from store import set_clock
from workers.actors import declare_actors
from workers.runtime import Runtime
from workers.sweeping import sweep

__all__ = ["SimulatedClock", "Simulation"]


class SimulatedClock:
    """A clock that stands still until :meth:`advance` moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Simulation:
    """Scheduler, sweeper and workers of one program, stepped through simulated time."""

    def __init__(self, rt: Runtime, broker: StubBroker, start: datetime) -> None:
        self.rt = rt
        self.broker = broker
        self.clock = SimulatedClock(start)
        self.actors = declare_actors(broker, rt)
        self._events: list[tuple[datetime, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.jobs_run = 0

    def __enter__(self) -> Simulation:
        self._previous = set_clock(self.clock)
        return self

    def __exit__(self, *exc: object) -> None:
        set_clock(self._previous)

    def at(self, when: datetime, event: Callable[[], None]) -> None:
        """Run ``event`` when the clock reaches ``when`` (before that step's tick)."""
        heapq.heappush(self._events, (when, next(self._order), event))

    def run_until(self, end: datetime, step: timedelta) -> None:
        """Step the clock by ``step`` until ``end``, doing a leader's and workers' work at each."""
        while self.clock.now < end:
            self.clock.advance(step)
            while self._events and self._events[0][0] <= self.clock.now:
                _, _, event = heapq.heappop(self._events)
                event()
            self.step()

    def step(self) -> None:
        """One tick, one sweep, and every job they (and the jobs) enqueued."""
        tick(self.rt.sessions, self.broker)
        sweep(self.rt)
        self.drain()

    def drain(self) -> None:
        """Run queued jobs (delayed ones too) until every queue is empty."""
        while True:
            ran = False
            for queue in list(self.broker.queues.values()):
                while not queue.empty():
                    self._run(dramatiq.Message.decode(queue.get_nowait()))
                    ran = True
            if not ran:
                return

    def _run(self, message: dramatiq.Message[Any]) -> None:
        self.actors[message.actor_name].fn(*message.args, **message.kwargs)
        self.jobs_run += 1
