"""The ``enroll`` message: how another service starts members' welcome sequences.

A service that shares loyalcast's Redis enqueues a dramatiq message on the
``events`` queue (under ``LOYALCAST_QUEUE_NAMESPACE``) for the actor
``enroll``, whose keyword arguments are::

    {"external_ids": ["M0001", "M0002"],   # 1 to 1000 members' external ids
     "campaign": "welcome"}               # optional: only this welcome sequence

From Python: ``broker.enqueue(dramatiq.Message(queue_name="events",
actor_name="enroll", args=(), kwargs={...}, options={}))`` on a
``RedisBroker(url=..., namespace="loyalcast")``, or
:func:`workers.jobs.enqueue_enroll`. ``loyalcast worker`` consumes the queue.

Handling it is :func:`workers.sequences.enroll` with source ``event``: safe to
deliver twice (a member already in the sequence gets nothing new). External
ids the store does not know are logged and skipped, and the others enrolled:
a member must be imported before they can be enrolled. A malformed message,
an unknown campaign or one that is not an active welcome sequence fails
without retries (it can never succeed as written) and stays in dramatiq's
dead-letter queue for inspection. A sequence whose segment the policy file
no longer allows (:class:`~workers.sequences.SequenceRuleNotAllowed`) enrolls
nobody and is retried with backoff, so a fix and a worker restart within the
retries lets it through; after them it too waits in the dead-letter queue.
"""

from __future__ import annotations

from typing import Any

import structlog

from .jobs import InvalidMessage
from .runtime import Runtime
from .sequences import (
    CampaignNotEnrollable,
    EnrollResult,
    UnknownCampaign,
    UnknownMembers,
    enroll,
)

__all__ = ["MAX_EXTERNAL_IDS", "enroll_event", "validate_enroll_message"]

log = structlog.get_logger(__name__)

#: Members per message at most (one message is one job).
MAX_EXTERNAL_IDS = 1000


def validate_enroll_message(external_ids: Any, campaign: Any, extra: dict[str, Any]) -> list[str]:
    """The message's external ids, or :class:`InvalidMessage` naming the field at fault."""
    if extra:
        raise InvalidMessage(f"enroll: unknown argument(s) {', '.join(sorted(extra))}")
    if not isinstance(external_ids, list) or not external_ids:
        raise InvalidMessage("enroll: external_ids must be a non-empty list of strings")
    if len(external_ids) > MAX_EXTERNAL_IDS:
        raise InvalidMessage(f"enroll: external_ids holds more than {MAX_EXTERNAL_IDS} ids")
    for i, value in enumerate(external_ids):
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            raise InvalidMessage(f"enroll: external_ids[{i}] must be an external id (1-64 chars)")
    if campaign is not None and not isinstance(campaign, str):
        raise InvalidMessage("enroll: campaign must be a campaign's name")
    return [value.strip() for value in external_ids]


def enroll_event(
    rt: Runtime, external_ids: Any = None, campaign: Any = None, **extra: Any
) -> EnrollResult:
    """Handle one ``enroll`` message (see the module docstring).

    Raises:
        InvalidMessage: the message is malformed, or names a campaign that is
            missing or not an active welcome sequence.
    """
    ids = validate_enroll_message(external_ids, campaign, extra)
    attributes = rt.program.attributes
    while True:
        try:
            return enroll(
                rt.sessions,
                ids,
                source="event",
                campaign=campaign,
                broker=rt.broker,
                attributes=attributes,
            )
        except UnknownMembers as exc:
            log.warning("enroll: unknown members skipped", external_ids=exc.unknown[:100])
            ids = [i for i in ids if i not in set(exc.unknown)]
            if not ids:
                return EnrollResult()
        except (UnknownCampaign, CampaignNotEnrollable) as exc:
            raise InvalidMessage(f"enroll: {exc}") from exc
