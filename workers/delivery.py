"""deliver(batch): policy, render, claim with a lease, send, record, for a batch of rows.

The steps, for the rows a job names (DESIGN.md §3, §4, §8):

1. Rows found ``sending`` with an expired lease were claimed by a worker that
   died or hung mid-send: they become ``unknown`` (or ``pending`` again when
   the campaign says ``on_ambiguous: resend``). They are never sent twice.
2. Open rows (``pending``, or ``deferred`` whose time has come) are loaded with
   their members, consents and push tokens in bulk. Policy picks each row's
   channel or records why not (``suppressed``); a template error fails that
   row alone (``failed``, reason ``render_error``).
3. Per channel, rows are claimed in chunks of the channel's ``max_batch``
   with a conditional UPDATE that sets ``sending``, a lease and an owner token,
   committed before the provider is called. Only rows this job claimed are
   sent, so two jobs naming the same rows send each once.
4. Outcomes are written in bulk, each UPDATE guarded by the owner token. A
   transient error defers the row (``not_before`` = retry-after or backoff)
   until its attempts reach the campaign's ``max_attempts``, then fails it.

The ambiguous window is one chunk: a worker killed between claiming a chunk
and recording it leaves those rows ``sending``; they end ``unknown``.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, bindparam, or_, select, update
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
from store import (
    Campaign,
    CampaignRun,
    Consent,
    ConsentStatus,
    Delivery,
    DeliveryStatus,
    Member,
    PushToken,
    RunStatus,
    utcnow,
)

from .compose import Closed, compose
from .feedback import set_consent
from .jobs import chunked, enqueue_deliver
from .leases import expire_leases
from .runtime import Runtime

__all__ = ["DeliverResult", "deliver_batch", "retry_delay"]

log = structlog.get_logger(__name__)

OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)
#: Retries due sooner than this are re-enqueued as delayed jobs; later ones
#: wait in the store for the sweeper (the broker never holds work for hours).
MAX_BROKER_DELAY = timedelta(minutes=10)

_table = cast(Table, Delivery.__table__)


@dataclass
class DeliverResult:
    """Counts of what one deliver job did, by outcome."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """The provider's retry-after when given, else exponential backoff with jitter."""
    if retry_after is not None and retry_after > 0:
        return timedelta(seconds=retry_after)
    base = min(5 * 2 ** max(attempts - 1, 0), 3600)
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def deliver_batch(rt: Runtime, delivery_ids: Sequence[int]) -> DeliverResult:
    """Deliver the open rows among ``delivery_ids``; see the module docstring."""
    result = DeliverResult()
    now = utcnow()
    with rt.sessions.begin() as session:
        result.add("ambiguous", expire_leases(session, now, delivery_ids))
        rows = list(
            session.scalars(
                select(Delivery).where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.status.in_(OPEN),
                    or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
                )
            )
        )
        if not rows:
            return result
        member_ids = {row.member_id for row in rows}
        members = {
            m.id: m for m in session.scalars(select(Member).where(Member.id.in_(member_ids)))
        }
        consents: dict[int, dict[str, Consent]] = defaultdict(dict)
        for consent in session.scalars(select(Consent).where(Consent.member_id.in_(member_ids))):
            consents[consent.member_id][consent.channel] = consent
        tokens: dict[int, list[PushToken]] = defaultdict(list)
        for token in session.scalars(
            select(PushToken)
            .where(PushToken.member_id.in_(member_ids), PushToken.revoked_at.is_(None))
            .order_by(PushToken.id)
        ):
            tokens[token.member_id].append(token)
        campaign_status = dict(
            session.execute(
                select(Campaign.id, Campaign.status).where(
                    Campaign.id.in_({row.campaign_id for row in rows})
                )
            ).all()
        )

    closed: list[dict[str, Any]] = []
    sendable: dict[str, list[Message]] = defaultdict(list)
    for row in rows:
        member = members.get(row.member_id)
        outcome = compose(
            rt,
            row,
            member,
            consents[row.member_id],
            tokens[row.member_id],
            campaign_status.get(row.campaign_id),
        )
        if isinstance(outcome, Closed):
            closed.append(
                _closed(outcome.delivery_id, outcome.status, outcome.reason, outcome.detail)
            )
        else:
            sendable[outcome.channel].append(outcome)

    if closed:
        with rt.sessions.begin() as session:
            _write_closed(session, closed)
        for entry in closed:
            result.add(entry["b_status"])

    max_attempts = {row.id: rt.version(row.campaign_version_id).spec.max_attempts for row in rows}
    for channel_name, messages in sendable.items():
        channel = rt.channels[channel_name]
        for chunk in chunked(messages, channel.max_batch):
            _send_chunk(rt, channel_name, chunk, max_attempts, result)

    _complete_runs(rt, {row.run_id for row in rows if row.run_id is not None})
    return result


def _status_is(*statuses: str) -> Any:
    """``status = a OR status = b``: an IN list cannot be used with executemany."""
    return or_(*(_table.c.status == status for status in statuses))


def _closed(delivery_id: int, status: DeliveryStatus, reason: str, detail: str) -> dict[str, Any]:
    return {"b_id": delivery_id, "b_status": status, "b_reason": reason, "b_detail": detail}


def _write_closed(session: Session, entries: list[dict[str, Any]]) -> None:
    session.execute(
        update(_table)
        .where(_table.c.id == bindparam("b_id"), _status_is(*OPEN))
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            detail=bindparam("b_detail"),
            updated_at=utcnow(),
        ),
        entries,
    )


def _send_chunk(
    rt: Runtime,
    channel_name: str,
    chunk: list[Message],
    max_attempts: dict[int, int],
    result: DeliverResult,
) -> None:
    owner = uuid.uuid4().hex
    now = utcnow()
    with rt.sessions.begin() as session:
        claimed = {
            row.id: row
            for row in session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_([m.delivery_id for m in chunk]),
                    Delivery.status.in_(OPEN),
                    or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
                )
                .values(
                    status=DeliveryStatus.SENDING,
                    channel=channel_name,
                    lease_until=now + timedelta(seconds=rt.settings.lease_seconds),
                    lease_owner=owner,
                    attempts=Delivery.attempts + 1,
                    updated_at=now,
                )
                .returning(Delivery.id, Delivery.attempts, Delivery.resend_on_ambiguous)
            )
        }
    messages = [m for m in chunk if m.delivery_id in claimed]
    if not messages:
        return
    try:
        outcomes: list[Outcome] = rt.channels[channel_name].send_batch(messages)
    except TransientDeliveryError as exc:
        outcomes = [exc] * len(messages)
    if len(outcomes) != len(messages):  # a channel bug: leave the rows to end as unknown
        raise RuntimeError(
            f"channel {channel_name} returned {len(outcomes)} outcomes for {len(messages)} messages"
        )
    _record(rt, messages, outcomes, claimed, max_attempts, owner, result)


def _record(
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
    campaign said ``on_ambiguous: resend``.
    """
    now = utcnow()
    sent: list[dict[str, Any]] = []
    closed: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    retry_soon: dict[int, list[int]] = defaultdict(list)
    for message, outcome in zip(messages, outcomes, strict=True):
        did = message.delivery_id
        if isinstance(outcome, Receipt):
            sent.append(
                {"b_id": did, "b_pid": outcome.provider_message_id, "b_at": outcome.accepted_at}
            )
        elif (
            isinstance(outcome, TransientDeliveryError)
            and outcome.ambiguous
            and not claimed[did].resend_on_ambiguous
        ):
            closed.append(_closed(did, DeliveryStatus.UNKNOWN, "ambiguous", str(outcome)))
        elif (
            isinstance(outcome, TransientDeliveryError)
            and claimed[did].attempts < max_attempts[did]
        ):
            delay = retry_delay(claimed[did].attempts, outcome.retry_after)
            soon = delay <= MAX_BROKER_DELAY
            deferred.append(
                {
                    "b_id": did,
                    "b_until": now + delay,
                    "b_detail": outcome.detail,
                    "b_enq": now + delay if soon else None,
                }
            )
            if soon:
                retry_soon[int(delay.total_seconds() * 1000)].append(did)
        elif isinstance(outcome, PermanentDeliveryError) and outcome.code == HOUSEHOLD:
            closed.append(_closed(did, DeliveryStatus.SUPPRESSED, "household", outcome.detail))
        elif isinstance(outcome, DeliveryError):
            reason = (
                "retries_exhausted"
                if isinstance(outcome, TransientDeliveryError)
                else outcome.reason
            )
            closed.append(_closed(did, DeliveryStatus.FAILED, reason, str(outcome)))
    guard = (_table.c.id == bindparam("b_id"), _table.c.lease_owner == owner)
    with rt.sessions.begin() as session:
        if sent:
            session.execute(
                update(_table)
                .where(*guard, _status_is(DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN))
                .values(
                    status=DeliveryStatus.SENT,
                    provider_message_id=bindparam("b_pid"),
                    sent_at=bindparam("b_at"),
                    reason=None,
                    detail=None,
                    lease_until=None,
                    updated_at=now,
                ),
                sent,
            )
        if closed:
            session.execute(
                update(_table)
                .where(*guard, _table.c.status == DeliveryStatus.SENDING)
                .values(
                    status=bindparam("b_status"),
                    reason=bindparam("b_reason"),
                    detail=bindparam("b_detail"),
                    lease_until=None,
                    updated_at=now,
                ),
                closed,
            )
        if deferred:
            session.execute(
                update(_table)
                .where(*guard, _table.c.status == DeliveryStatus.SENDING)
                .values(
                    status=DeliveryStatus.DEFERRED,
                    reason="retry",
                    detail=bindparam("b_detail"),
                    not_before=bindparam("b_until"),
                    enqueued_at=bindparam("b_enq"),
                    lease_until=None,
                    updated_at=now,
                ),
                deferred,
            )
        _apply_consequences(session, messages, outcomes, now)
    result.add(DeliveryStatus.SENT, len(sent))
    for entry in closed:
        result.add(entry["b_status"])
    result.add(DeliveryStatus.DEFERRED, len(deferred))
    if rt.broker is not None:
        for delay_ms, ids in retry_soon.items():
            enqueue_deliver(rt.broker, ids, delay_ms=delay_ms)


def _apply_consequences(
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


def _complete_runs(rt: Runtime, run_ids: set[int]) -> None:
    """Mark planned runs whose deliveries are all final as completed."""
    if not run_ids:
        return
    open_statuses = [s for s in DeliveryStatus if s.is_open]
    with rt.sessions.begin() as session:
        for run_id in run_ids:
            still_open = session.scalar(
                select(Delivery.id)
                .where(Delivery.run_id == run_id, Delivery.status.in_(open_statuses))
                .limit(1)
            )
            if still_open is None:
                session.execute(
                    update(CampaignRun)
                    .where(CampaignRun.id == run_id, CampaignRun.status == RunStatus.PLANNED)
                    .values(status=RunStatus.COMPLETED, completed_at=utcnow())
                )
