"""The actors, declared on a given broker: plan, deliver, sweep and enroll.

Each takes ids only and is idempotent: running a job twice (a redelivery
after a worker died, a sweep that re-enqueued it) changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from .delivery import deliver_batch
from .enrollment_events import enroll_event
from .jobs import DELIVER, ENROLL, PLAN, SWEEP
from .planning import plan_run
from .runtime import Runtime
from .sweeping import sweep

__all__ = ["declare_actors"]


def declare_actors(broker: dramatiq.Broker, rt: Runtime) -> dict[str, Any]:
    """Declare plan, deliver, sweep and enroll on ``broker``, bound to ``rt``."""

    def declare(spec: tuple[str, str], fn: Callable[..., Any], **options: Any) -> Any:
        name, queue = spec
        return dramatiq.actor(actor_name=name, queue_name=queue, broker=broker, **options)(fn)

    def plan(run_id: int) -> None:
        plan_run(rt, run_id)

    def deliver(delivery_ids: list[int]) -> None:
        deliver_batch(rt, delivery_ids)

    def sweep_(*_: Any) -> None:
        sweep(rt)

    def enroll(*args: Any, **kwargs: Any) -> None:
        enroll_event(rt, *args, **kwargs)

    return {
        "plan": declare(PLAN, plan),
        "deliver": declare(DELIVER, deliver),
        "sweep": declare(SWEEP, sweep_, max_retries=0),
        "enroll": declare(ENROLL, enroll),
    }
