"""Enqueueing work by actor name, so callers need no actor objects.

The scheduler and the CLI send jobs through these helpers; the worker
process declares the actors themselves (:mod:`workers.actors`). Jobs carry
ids only: the store holds everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import dramatiq

__all__ = [
    "DELIVER",
    "ENROLL",
    "PLAN",
    "QUEUES",
    "SWEEP",
    "InvalidMessage",
    "chunked",
    "enqueue_deliver",
    "enqueue_enroll",
    "enqueue_plan",
    "enqueue_sweep",
]

PLAN = ("plan", "plan")
DELIVER = ("deliver", "deliver")
SWEEP = ("sweep", "maintenance")
#: Enrollment events from other services (see ``workers.enrollment_events``).
ENROLL = ("enroll", "events")
#: Every queue a worker consumes.
QUEUES = ("plan", "deliver", "maintenance", "events")


class InvalidMessage(ValueError):
    """A message that can never succeed as written (bad arguments): not retried."""


T = TypeVar("T")


def _message(
    actor: tuple[str, str], args: tuple[object, ...], **options: object
) -> dramatiq.Message:  # type: ignore[type-arg]
    name, queue = actor
    return dramatiq.Message(
        queue_name=queue, actor_name=name, args=args, kwargs={}, options=dict(options)
    )


def enqueue_plan(broker: dramatiq.Broker, run_id: int) -> None:
    """Ask a worker to write the delivery rows of campaign run ``run_id``."""
    broker.enqueue(_message(PLAN, (run_id,)))


def enqueue_deliver(
    broker: dramatiq.Broker, delivery_ids: Sequence[int], *, delay_ms: int | None = None
) -> None:
    """Ask a worker to deliver these rows (they must already exist in the store)."""
    if delivery_ids:
        broker.enqueue(_message(DELIVER, (list(delivery_ids),)), delay=delay_ms)


def enqueue_sweep(broker: dramatiq.Broker, *, max_age_ms: int) -> None:
    """Ask a worker to sweep stale and due rows; dropped if not started within ``max_age_ms``."""
    broker.enqueue(_message(SWEEP, (), max_age=max_age_ms))


def enqueue_enroll(
    broker: dramatiq.Broker, external_ids: Sequence[str], campaign: str | None = None
) -> None:
    """Enroll these members (external ids) in the welcome sequences, or in ``campaign``."""
    kwargs: dict[str, object] = {"external_ids": list(external_ids)}
    if campaign is not None:
        kwargs["campaign"] = campaign
    name, queue = ENROLL
    broker.enqueue(
        dramatiq.Message(queue_name=queue, actor_name=name, args=(), kwargs=kwargs, options={})
    )


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Split ``items`` into lists of at most ``size``."""
    chunk: list[T] = []
    for i in items:
        chunk.append(i)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
