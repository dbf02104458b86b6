"""Composing one delivery's message just before sending: policy, context, render, metadata.

:func:`compose` is the per-row half of the deliver job. It returns the
:class:`~channels.Message` to send, a :class:`Closed` outcome to record
(suppressed with the policy's reason, or failed with the template's error), or
a :class:`Deferred` one (quiet hours: the message waits in the store until the
member's window opens, never dropped; an expiry reminder before its lead date,
see :mod:`workers.reminder_dates`). It reads only what the deliver job
loaded in bulk, so it does no I/O of its own.

Quiet hours apply to ``marketing`` and ``service`` messages on the chosen
channel, in the member's time zone (the program's when the member has none);
``transactional`` messages are exempt. Frequency caps are reserved later, by
the deliver job, just before the claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels import Message
from store import CampaignStatus, Delivery, DeliveryStatus, Member, PushToken
from templates import TemplateError

from .context import member_context, trigger_context
from .ledger import HOLD
from .policy import ConsentState, Skip, route
from .quiet_hours import describe, next_opening
from .reminder_dates import lead_date_wait, reminder_deadline
from .runtime import LoadedVersion, Runtime
from .unsubscribe import unsubscribe_url

__all__ = ["Closed", "Deferred", "compose"]


@dataclass(frozen=True)
class Deferred:
    """A row that waits until ``until`` (quiet hours), and why."""

    delivery_id: int
    until: datetime
    reason: str
    detail: str


@dataclass(frozen=True)
class Closed:
    """A row that ends here without being sent, and why."""

    delivery_id: int
    status: DeliveryStatus
    reason: str
    detail: str


def compose(
    rt: Runtime,
    row: Delivery,
    member: Member | None,
    consents: Mapping[str, ConsentState],
    tokens: Sequence[PushToken],
    campaign_status: str | None,
    now: datetime,
    *,
    version: LoadedVersion | None = None,
) -> Message | Closed | Deferred:
    """Decide and render ``row``'s message, or say why it is not sent.

    ``version`` is the row's campaign version when the caller has it already
    (a forecast's, which is not stored); by default it is loaded by id.
    """
    if campaign_status == CampaignStatus.CANCELLED:
        return Closed(row.id, DeliveryStatus.SUPPRESSED, "cancelled", "campaign cancelled")
    if campaign_status == CampaignStatus.PAUSED:
        return Deferred(row.id, now + HOLD, "paused", "campaign paused")
    if member is None or member.deleted_at is not None:
        return Closed(row.id, DeliveryStatus.SUPPRESSED, "member_deleted", "member deleted")
    if version is None:
        version = rt.version(row.campaign_version_id)
    decision = route(member, consents, tokens, row.channels.split(","), row.category)
    if isinstance(decision, Skip):
        return Closed(row.id, DeliveryStatus.SUPPRESSED, decision.reason, decision.detail)
    program = rt.program
    zone = member.time_zone or program.default_time_zone
    reminder = row.payload if version.spec.kind == "expiry_reminder" else None
    if reminder is not None:
        wait = lead_date_wait(
            reminder, decision.channel, member.time_zone, program.default_time_zone, now
        )
        if wait is not None:
            return Deferred(row.id, wait[0], "scheduled", wait[1])
    if row.category != "transactional":
        window = version.spec.quiet_hours_for(decision.channel, program)
        until = (
            next_opening(now, zone, window, default_time_zone=program.default_time_zone)
            if window is not None
            else None
        )
        if until is not None:
            detail = describe(
                until, zone, channel=decision.channel, default_time_zone=program.default_time_zone
            )
            return Deferred(row.id, until, "quiet_hours", detail)
    metadata: dict[str, Any] = {
        "time_zone": zone,
        "campaign_version": version.version,
        "run_id": row.run_id,
        "max_sms_segments": version.spec.max_sms_segments,
        **decision.metadata,
    }
    if reminder is not None:
        metadata["deadline"] = reminder_deadline(reminder)  # caps defer, not suppress
    context = {
        **member_context(member, version, program.default_time_zone),
        **trigger_context(version.spec, row.payload),
    }
    if decision.channel == "email" and rt.settings.public_url:
        link = unsubscribe_url(rt.settings.public_url, rt.signing_key, member.id, decision.channel)
        metadata["unsubscribe_url"] = context["unsubscribe_url"] = link
    try:
        template = version.template_for(row.payload)
        parts = rt.renderer.render(
            (version.id, template),
            template,
            version.templates[template],
            decision.channel,
            context,
        )
    except TemplateError as exc:
        return Closed(row.id, DeliveryStatus.FAILED, "render_error", str(exc))
    return Message(
        delivery_id=row.id,
        dedupe_key=row.dedupe_key,
        member_id=member.id,
        channel=decision.channel,
        to=decision.to,
        parts=parts,
        category=row.category,
        campaign=version.campaign_name,
        metadata=metadata,
    )
