"""deliver(batch): policy, render, claim with a lease, send, record, for a batch of rows.

The steps, for the rows a job names (DESIGN.md §3, §4, §8):

1. Rows found ``sending`` with an expired lease were claimed by a worker that
   died or hung mid-send: they become ``unknown`` (or ``pending`` again when
   the campaign says ``on_ambiguous: resend``). They are never sent twice.
2. Open rows (``pending``, or ``deferred`` whose time has come) are loaded with
   their members, consents and push tokens in bulk. A row whose trigger no
   longer holds ends here (:mod:`workers.rechecks`). Policy picks each row's
   channel or records why not (``suppressed``); a template error fails that
   row alone (``failed``, reason ``render_error``).
3. Per channel, rows are claimed in chunks of the channel's ``max_batch``
   with a conditional UPDATE that sets ``sending``, a lease and an owner token,
   committed before the provider is called. Only rows this job claimed are
   sent, so two jobs naming the same rows send each once.
4. Outcomes are written in bulk by :mod:`workers.outcomes`, each UPDATE
   guarded by the owner token. Direct-mail pieces first claim their household
   (:mod:`workers.households`).

The ambiguous window is one chunk: a worker killed between claiming a chunk
and recording it leaves those rows ``sending``; they end ``unknown``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select, update

from channels import Message, Outcome, TransientDeliveryError
from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Member,
    RunStatus,
    utcnow,
)
from store.bulk import among, unindexed

from .capping import apply_caps, prepare_caps
from .compose import Closed, Deferred, compose
from .households import claim_households
from .jobs import chunked
from .leases import expire_leases
from .ledger import (
    OPEN,
    DeliverResult,
    closed_entry,
    deferred_entry,
    write_closed,
    write_deferred,
)
from .outcomes import record_outcomes
from .policy import load_reachability
from .rechecks import recheck
from .runtime import Runtime

__all__ = ["DeliverResult", "deliver_batch"]

log = structlog.get_logger(__name__)


def deliver_batch(rt: Runtime, delivery_ids: Sequence[int]) -> DeliverResult:
    """Deliver the open rows among ``delivery_ids``; see the module docstring."""
    result = DeliverResult()
    now = utcnow()
    with rt.sessions.begin() as session:
        result.add("ambiguous", expire_leases(session, now, delivery_ids))
        rows = list(
            session.scalars(
                select(Delivery).where(
                    among(session, Delivery.id, delivery_ids),
                    unindexed(Delivery.status).in_(OPEN),
                    or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
                )
            )
        )
        if not rows:
            return result
        member_ids = {row.member_id for row in rows}
        members = {
            m.id: m
            for m in session.scalars(select(Member).where(among(session, Member.id, member_ids)))
        }
        consents, tokens = load_reachability(session, member_ids)
        campaign_status = dict(
            session.execute(
                select(Campaign.id, Campaign.status).where(
                    Campaign.id.in_({row.campaign_id for row in rows})
                )
            ).all()
        )

    # Versions load through a session of their own: never inside a transaction
    # (on SQLite a second connection would wait for this one's write lock).
    for version_id in {row.campaign_version_id for row in rows}:
        rt.version(version_id)
    ended = recheck(rt, rows, members, consents, now)
    closed: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    sendable: dict[str, list[Message]] = defaultdict(list)
    for row in rows:
        member = members.get(row.member_id)
        outcome = ended.get(row.id) or compose(
            rt,
            row,
            member,
            consents[row.member_id],
            tokens[row.member_id],
            campaign_status.get(row.campaign_id),
            now,
        )
        if isinstance(outcome, Deferred):
            deferred.append(
                deferred_entry(outcome.delivery_id, outcome.until, outcome.reason, outcome.detail)
            )
        elif isinstance(outcome, Closed):
            closed.append(
                closed_entry(outcome.delivery_id, outcome.status, outcome.reason, outcome.detail)
            )
        else:
            sendable[outcome.channel].append(outcome)

    if closed or deferred:
        with rt.sessions.begin() as session:
            write_closed(session, closed)
            write_deferred(session, deferred)
        for entry in closed:
            result.add(entry["status"])
        result.add(DeliveryStatus.DEFERRED, len(deferred))

    max_attempts = {row.id: rt.version(row.campaign_version_id).spec.max_attempts for row in rows}
    prepare_caps(rt, [m for messages in sendable.values() for m in messages], now)
    for channel_name, messages in sendable.items():
        channel = rt.channels[channel_name]
        for chunk in chunked(messages, channel.max_batch):
            _send_chunk(rt, channel_name, chunk, max_attempts, result)

    _complete_runs(rt, {row.run_id for row in rows if row.run_id is not None})
    return result


def _send_chunk(
    rt: Runtime,
    channel_name: str,
    chunk: list[Message],
    max_attempts: dict[int, int],
    result: DeliverResult,
) -> None:
    owner = uuid.uuid4().hex
    now = utcnow()
    chunk, capped, waiting = apply_caps(rt, chunk, now)
    with rt.sessions.begin() as session:
        write_closed(session, capped)
        write_deferred(session, waiting)
        result.add(DeliveryStatus.SUPPRESSED, len(capped))
        result.add(DeliveryStatus.DEFERRED, len(waiting))
        if channel_name == "direct_mail":
            chunk, duplicates = claim_households(session, chunk, now)
            if duplicates:
                write_closed(session, duplicates)
                result.add(DeliveryStatus.SUPPRESSED, len(duplicates))
        claimed = {
            row.id: row
            for row in session.execute(
                update(Delivery)
                .where(
                    among(session, Delivery.id, [m.delivery_id for m in chunk]),
                    unindexed(Delivery.status).in_(OPEN),
                    or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
                    # Cancel and pause take effect here, on every worker, at once.
                    Delivery.campaign_id.in_(
                        select(Campaign.id).where(Campaign.status == CampaignStatus.ACTIVE)
                    ),
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
    record_outcomes(rt, messages, outcomes, claimed, max_attempts, owner, result)


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
