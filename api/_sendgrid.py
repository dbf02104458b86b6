"""SendGrid's signed Event Webhook: delivery outcomes and unsubscribes.

Verification: ``X-Twilio-Email-Event-Webhook-Signature`` is an ECDSA P-256
signature (SHA-256, base64 DER) over the ``X-Twilio-Email-Event-Webhook-Timestamp``
header followed by the raw body, checked with ``SENDGRID_WEBHOOK_PUBLIC_KEY``
(base64 DER SubjectPublicKeyInfo, as SendGrid shows it). A bad or missing
signature is refused with 403 before the body is parsed.

Replay: a correctly signed request whose timestamp is more than
:data:`MAX_AGE` old (or as far in the future: clock skew) is refused with 403,
so a captured request cannot be played back later. SendGrid signs each
attempt when it makes it, so its own retries carry fresh timestamps; events
it resends are applied once thanks to their ``sg_event_id``.

Events (each one's ``delivery_id`` is the custom argument our email channel
sets; ``sg_message_id`` is not used, since one SendGrid message id covers a
whole batch of recipients):

- ``delivered`` -> delivered; ``bounce`` -> bounced (reason ``bounce:<type>``);
  ``dropped`` -> failed (reason ``dropped:<reason>``); forward only, and
  also for a row still ``sending`` (an event can beat the worker's record of
  the batch; the record then keeps it).
- ``spamreport``, ``unsubscribe``, ``group_unsubscribe`` -> the email consent
  of the delivery's member, and of every member with that address, becomes
  ``opted_out`` (source ``sendgrid-<event>``).
- Anything else (``processed``, ``deferred``, ``open``, ``click``, ...) is ignored.

All events of one request are applied in one transaction; a failure rolls
them all back and answers 500, and SendGrid retries the request.
"""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from store import ConsentStatus, Delivery, DeliveryStatus
from workers.feedback import (
    apply_provider_status,
    find_members_by_email,
    record_event_once,
    set_consent,
)

from ._common import Context, context, forbidden, log, unconfigured

__all__ = ["MAX_AGE", "events", "load_public_key"]

MAX_AGE = 600
"""Seconds a signed request stays acceptable (10 minutes), either side of now."""
PROVIDER = "sendgrid"
_OPT_OUT_EVENTS = frozenset({"spamreport", "unsubscribe", "group_unsubscribe"})
_HANDLED = frozenset({"delivered", "bounce", "dropped"}) | _OPT_OUT_EVENTS


def load_public_key(encoded: str | None) -> tuple[Any | None, str | None]:
    """Parse ``SENDGRID_WEBHOOK_PUBLIC_KEY``.

    Returns:
        ``(key, None)`` when usable, else ``(None, problem)`` naming the setting.
    """
    if not encoded:
        return None, "SENDGRID_WEBHOOK_PUBLIC_KEY is not set"
    try:
        return EventWebhook().convert_public_key_to_ecdsa(encoded.strip()), None
    except (ValueError, TypeError):
        return None, "SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid base64 public key"


async def events(request: Request) -> Response:
    """``POST /webhooks/sendgrid/events``: a batch of signed events (200)."""
    ctx = context(request)
    if ctx.sendgrid_key is None:
        return unconfigured(ctx.sendgrid_key_problem or "SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
    signature = request.headers.get(EventWebhookHeader.SIGNATURE)
    timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP)
    if not signature or not timestamp:
        return forbidden(PROVIDER, "no signature or timestamp", request)
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        return forbidden(PROVIDER, "body is not UTF-8", request)
    if not _signed(ctx, body, signature, timestamp):
        return forbidden(PROVIDER, "signature does not match", request)
    if abs(time.time() - int(timestamp)) > MAX_AGE:
        return forbidden(PROVIDER, "timestamp outside the replay window", request)
    try:
        batch = json.loads(body)
    except ValueError:
        batch = None
    if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
        return PlainTextResponse("expected a JSON array of events\n", status_code=400)
    counts = await run_in_threadpool(_apply_batch, ctx, batch)
    log.info("sendgrid events", **counts)
    return Response(status_code=200)


def _signed(ctx: Context, body: str, signature: str, timestamp: str) -> bool:
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    try:
        return bool(EventWebhook().verify_signature(body, signature, timestamp, ctx.sendgrid_key))
    except (binascii.Error, ValueError, TypeError):
        return False


def _apply_batch(ctx: Context, batch: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"applied": 0, "duplicate": 0, "ignored": 0}
    with ctx.sessions.begin() as session:
        for event in batch:
            counts[_apply_event(session, event)] += 1
    return counts


def _apply_event(session: Session, event: Mapping[str, Any]) -> str:
    kind = event.get("event")
    if not isinstance(kind, str) or kind not in _HANDLED:
        return "ignored"
    event_id = event.get("sg_event_id")
    if _text(event_id) and not record_event_once(session, PROVIDER, event_id):
        return "duplicate"
    delivery_id = _int(event.get("delivery_id"))
    if kind in _OPT_OUT_EVENTS:
        _opt_out(session, kind, delivery_id, event)
        return "applied"
    if delivery_id is None:
        return "ignored"
    if kind == "delivered":
        new, reason = DeliveryStatus.DELIVERED, None
    elif kind == "bounce":
        new, reason = DeliveryStatus.BOUNCED, f"bounce:{event.get('type') or 'bounce'}"
    else:
        new, reason = DeliveryStatus.FAILED, f"dropped:{event.get('reason') or 'unknown'}"
    detail = event.get("reason") or event.get("response")
    apply_provider_status(
        session,
        delivery_id=delivery_id,
        status=new,
        reason=reason,
        detail=f"SendGrid {kind}" + (f": {detail}" if detail else ""),
    )
    return "applied"


def _opt_out(
    session: Session, kind: str, delivery_id: int | None, event: Mapping[str, Any]
) -> None:
    email = event.get("email")
    member_ids = {m.id for m in find_members_by_email(session, email)} if _text(email) else set()
    if delivery_id is not None:
        owner = select(Delivery.member_id).where(Delivery.id == delivery_id)
        member_ids.update(session.scalars(owner))
    at = _instant(event.get("timestamp"))
    for member_id in sorted(member_ids):
        set_consent(
            session,
            member_id,
            "email",
            ConsentStatus.OPTED_OUT,
            source=f"{PROVIDER}-{kind}",
            detail=f"SendGrid {kind}" + (f" (delivery {delivery_id})" if delivery_id else ""),
            at=at,
        )


def _int(value: Any) -> int | None:
    """A custom argument as an id: SendGrid sends custom args back as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 0 < value < 2**63:
        return value
    return None


def _text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _instant(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
