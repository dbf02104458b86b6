"""Frequency caps in the deliver job: reserve just before the claim, give back on failure.

For each message about to be claimed, the program's cap rules are reserved in
Redis, atomically per message, a chunk's messages in one script call
(:class:`workers.caps.CapCounter`):

- reserved: the message goes on to be claimed and sent;
- capped: the message is suppressed (reason ``frequency_cap``, detail naming
  the rule), except a deadline-bound one (``metadata["deadline"]``, e.g. an
  expiry reminder), which is deferred to the rule's first free slot when that
  comes before its deadline;
- cap state unavailable (Redis down, counters lost while rebuilding): the
  message is deferred a minute; a cap is never skipped for want of counters.

A reservation is keyed by delivery id, so reserving again (a retry, a second
worker on the same row) takes no second slot; a permanent failure gives it
back (:func:`release_failed`). Before a deliver batch is cut into chunks,
:func:`prepare_caps` rebuilds its members' missing counters in one go (an
SMS batch of 1,000 is 50 chunks, which would each rebuild their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import redis
import structlog

from channels import Message
from store import DeliveryStatus

from .caps import Capped, CapRequest, CapStateLost
from .ledger import closed_entry, deferred_entry
from .runtime import Runtime

__all__ = ["CAPS_UNAVAILABLE_RETRY", "apply_caps", "prepare_caps", "release_failed"]

log = structlog.get_logger(__name__)

#: How long a message waits when the cap counters cannot be trusted.
CAPS_UNAVAILABLE_RETRY = timedelta(minutes=1)


def _request(message: Message) -> CapRequest:
    return CapRequest(
        member_id=message.member_id,
        channel=message.channel,
        category=message.category,
        delivery_id=message.delivery_id,
        time_zone=message.metadata.get("time_zone"),
    )


def prepare_caps(rt: Runtime, messages: Sequence[Message], now: datetime) -> None:
    """Rebuild the missing counters of a whole deliver batch before it is reserved in chunks.

    An optimisation only: on a Redis error nothing happens here, and each
    chunk's :func:`apply_caps` decides (and defers) as it would have.
    """
    counter = rt.caps
    if counter is None or not messages:
        return
    zones = {
        m.member_id: m.metadata.get("time_zone")
        for m in messages
        if counter.counts(m.channel, m.category)  # never Redis for what no rule counts
    }
    try:
        counter.prepare(zones, now=now)
    except redis.RedisError as exc:
        log.warning("could not prepare cap counters", error=str(exc), members=len(zones))


def apply_caps(
    rt: Runtime, chunk: list[Message], now: datetime
) -> tuple[list[Message], list[dict[str, Any]], list[dict[str, Any]]]:
    """Reserve cap slots for ``chunk``; return (messages to send, closed rows, deferred rows)."""
    counter = rt.caps
    if counter is None or not chunk:
        return chunk, [], []
    try:
        outcomes = counter.reserve_many([_request(m) for m in chunk], now=now)
    except (redis.RedisError, CapStateLost) as exc:
        log.warning("frequency caps unavailable; deferring", error=str(exc), messages=len(chunk))
        until = now + CAPS_UNAVAILABLE_RETRY
        detail = f"frequency caps unavailable: {exc}"
        return (
            [],
            [],
            [deferred_entry(m.delivery_id, until, "caps_unavailable", detail) for m in chunk],
        )
    kept: list[Message] = []
    closed: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    for message, outcome in zip(chunk, outcomes, strict=True):
        if not isinstance(outcome, Capped):
            kept.append(message)
            continue
        deadline = message.metadata.get("deadline")
        if isinstance(deadline, datetime) and outcome.next_free_at < deadline:
            deferred.append(
                deferred_entry(
                    message.delivery_id,
                    outcome.next_free_at,
                    outcome.reason,
                    f"{outcome.detail}; next slot {outcome.next_free_at.isoformat()}",
                )
            )
        else:
            closed.append(
                closed_entry(
                    message.delivery_id, DeliveryStatus.SUPPRESSED, outcome.reason, outcome.detail
                )
            )
    return kept, closed, deferred


def release_failed(rt: Runtime, failed: Sequence[Message], now: datetime) -> None:
    """Give back the cap slots of messages that failed permanently (they were never sent)."""
    counter = rt.caps
    if counter is None or not failed:
        return
    try:
        counter.release_many([_request(m) for m in failed], now=now)
    except redis.RedisError as exc:  # the slot stays taken: conservative, never over the cap
        log.warning("could not give cap slots back", error=str(exc), messages=len(failed))
