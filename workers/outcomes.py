"""Recording what providers answered: sent, retried later, unknown, failed, suppressed.

Each claimed row's outcome is written by one UPDATE per kind of outcome for
the whole chunk (:func:`store.bulk.update_many`), guarded by the claim's
owner token. A transient error defers the row (``not_before`` = retry-after or
backoff) until its attempts reach the campaign's ``max_attempts``; an
ambiguous one (the provider may have the message) ends ``unknown`` unless the
campaign says ``on_ambiguous: resend``. An answer can also mean more than
this delivery: see :func:`apply_consequences`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, null, update
from sqlalchemy.orm import Session

from channels import (
    DeliveryError,
    InvalidRecipient,
    Message,
    Outcome,
    PermanentDeliveryError,
    Receipt,
    RecipientOptedOut,
    TransientDeliveryError,
)
from channels.direct_mail import HOUSEHOLD
from store import ConsentStatus, DeliveryStatus, PushToken, utcnow
from store.bulk import update_many

from .capping import release_failed
from .feedback import FEEDBACK_STATUSES, set_consent
from .jobs import enqueue_deliver
from .ledger import DeliverResult, closed_entry, deliveries, status_is
from .runtime import Runtime

__all__ = ["MAX_BROKER_DELAY", "apply_consequences", "record_outcomes", "retry_delay"]

#: Retries due sooner than this are re-enqueued as delayed jobs; later ones
#: wait in the store for the sweeper (the broker never holds work for hours).
MAX_BROKER_DELAY = timedelta(minutes=10)


#: Where a claimed row the provider accepted may be when its record is written:
#: still ``sending``, ``unknown`` (its lease ran out meanwhile), or moved on by
#: the provider's own report.
_ACCEPTED_FROM = (DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN, *FEEDBACK_STATUSES)


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """The provider's retry-after when given, else exponential backoff with jitter."""
    if retry_after is not None and retry_after > 0:
        return timedelta(seconds=retry_after)
    base = min(5 * 2 ** max(attempts - 1, 0), 3600)
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def record_outcomes(
    rt: Runtime,
    messages: list[Message],
    outcomes: list[Outcome],
    claimed: dict[int, Any],
    max_attempts: dict[int, int],
    owner: str,
    result: DeliverResult,
) -> None:
    """Write each claimed row's outcome, guarded by this claim's owner token.

    A transient error retries until ``max_attempts``, except an ambiguous one
    (the provider may have the message): that row ends ``unknown`` unless the
    campaign said ``on_ambiguous: resend``. A row the provider has already
    reported on (``delivered``, ``failed``, ...; see
    :func:`workers.feedback.apply_provider_status`) keeps that status: an
    accepted message adds its provider id and ``sent_at``, an error changes
    nothing.
    """
    now = utcnow()
    sent: list[dict[str, Any]] = []
    closed: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    never_sent: list[Message] = []
    retry_soon: dict[int, list[int]] = defaultdict(list)
    for message, outcome in zip(messages, outcomes, strict=True):
        did = message.delivery_id
        if isinstance(outcome, Receipt):
            sent.append({"id": did, "provider_message_id": outcome.provider_message_id})
        elif (
            isinstance(outcome, TransientDeliveryError)
            and outcome.ambiguous
            and not claimed[did].resend_on_ambiguous
        ):
            closed.append(closed_entry(did, DeliveryStatus.UNKNOWN, "ambiguous", str(outcome)))
        elif (
            isinstance(outcome, TransientDeliveryError)
            and claimed[did].attempts < max_attempts[did]
        ):
            delay = retry_delay(claimed[did].attempts, outcome.retry_after)
            soon = delay <= MAX_BROKER_DELAY
            deferred.append(
                {
                    "id": did,
                    "not_before": now + delay,
                    "detail": outcome.detail,
                    "enqueued_at": now + delay if soon else None,
                }
            )
            if soon:
                retry_soon[int(delay.total_seconds() * 1000)].append(did)
        elif isinstance(outcome, PermanentDeliveryError) and outcome.code == HOUSEHOLD:
            closed.append(closed_entry(did, DeliveryStatus.SUPPRESSED, "household", outcome.detail))
            never_sent.append(message)
        elif isinstance(outcome, DeliveryError):
            reason = (
                "retries_exhausted"
                if isinstance(outcome, TransientDeliveryError)
                else outcome.reason
            )
            closed.append(closed_entry(did, DeliveryStatus.FAILED, reason, str(outcome)))
            never_sent.append(message)
    claim = [deliveries.c.lease_owner == owner]
    # A provider may report on a message before this record (workers.feedback):
    # its status, reason and detail are kept, the provider's id is added.
    unreported = status_is(DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN)
    with rt.sessions.begin() as session:
        update_many(
            session,
            deliveries,
            sent,
            where=[*claim, status_is(*_ACCEPTED_FROM)],
            values={
                "status": case((unreported, DeliveryStatus.SENT), else_=deliveries.c.status),
                # loyalcast's clock (store.utcnow), the one caps and the ledger
                # are read by, not the channel's receipt time.
                "sent_at": now,
                "reason": case((unreported, null()), else_=deliveries.c.reason),
                "detail": case((unreported, null()), else_=deliveries.c.detail),
                "lease_until": None,
                "updated_at": now,
            },
        )
        update_many(
            session,
            deliveries,
            closed,
            where=[*claim, status_is(DeliveryStatus.SENDING)],
            values={"lease_until": None, "updated_at": now},
        )
        update_many(
            session,
            deliveries,
            deferred,
            where=[*claim, status_is(DeliveryStatus.SENDING)],
            values={
                "status": DeliveryStatus.DEFERRED,
                "reason": "retry",
                "lease_until": None,
                "updated_at": now,
            },
        )
        apply_consequences(session, messages, outcomes, now)
    release_failed(rt, never_sent, now)
    result.add(DeliveryStatus.SENT, len(sent))
    for entry in closed:
        result.add(entry["status"])
    result.add(DeliveryStatus.DEFERRED, len(deferred))
    if rt.broker is not None:
        for delay_ms, ids in retry_soon.items():
            enqueue_deliver(rt.broker, ids, delay_ms=delay_ms)


def apply_consequences(
    session: Session, messages: list[Message], outcomes: list[Outcome], now: datetime
) -> None:
    """What a provider's answer means beyond this delivery.

    - ``RecipientOptedOut`` (Twilio 21610, ...) records an opt-out on that
      channel, so policy stops the next message before it reaches the provider.
    - ``InvalidRecipient`` on push revokes the device token or subscription
      the message used; the member's next push goes to another device or not
      at all.
    """
    for message, outcome in zip(messages, outcomes, strict=True):
        if isinstance(outcome, RecipientOptedOut):
            set_consent(
                session,
                message.member_id,
                message.channel,
                ConsentStatus.OPTED_OUT,
                source=f"provider:{outcome.code or 'opted-out'}",
                detail=outcome.detail,
                at=now,
            )
        elif isinstance(outcome, InvalidRecipient) and "push_token_id" in message.metadata:
            session.execute(
                update(PushToken)
                .where(
                    PushToken.id == message.metadata["push_token_id"],
                    PushToken.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
