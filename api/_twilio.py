"""Twilio webhooks: message status callbacks and inbound SMS keywords.

Both check ``X-Twilio-Signature`` with the account's auth token against the
URL Twilio called, which is ``LOYALCAST_PUBLIC_URL`` + the request's path
(and query): the api sits behind proxies, so the URL it sees is not the one
Twilio signed. ``LOYALCAST_PUBLIC_URL`` must therefore be exactly the origin
(plus any path prefix a proxy strips) that the webhook URLs configured at
Twilio start with. Without ``TWILIO_AUTH_TOKEN`` or ``LOYALCAST_PUBLIC_URL``
the routes answer 503 naming the missing setting.

Status callbacks (``MessageStatus``): ``delivered`` -> delivered;
``undelivered``/``failed`` -> failed with reason ``provider:<ErrorCode>``;
anything else (``queued``, ``sending``, ``sent``, ...) is ignored, the ledger
already says ``sent``. The SMS channel gives each message its own callback
URL, ``.../webhooks/twilio/status?delivery=<id>`` (the query is covered by
the signature), so a report finds its delivery even before the worker has
recorded the Message SID, and a delivery left ``unknown`` by a lost answer;
a callback without it (a message sent before this) is matched by SID.
Error 21610 (the handset sent STOP) also opts the delivery's member, and
every member with that phone, out of SMS.

Inbound keywords (the body, trimmed and case-folded, must be exactly one):
STOP and its synonyms opt every member with the sender's phone out of SMS;
START/UNSTOP opt them back in; HELP is answered with :data:`HELP_TEXT`.
A phone shared by several members (a household) is one handset, so a keyword
applies to all of them. Twilio also acts on STOP itself (Advanced Opt-Out);
we record it so our own policy knows, and reply nothing, so the member does
not get two confirmations. HELP is answered to any sender, known or not
(carriers require a HELP reply); it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from twilio.request_validator import RequestValidator

from store import ConsentStatus, Delivery, DeliveryStatus
from workers.feedback import apply_provider_status, find_members_by_phone, set_consent

from ._common import Context, context, forbidden, log, unconfigured

__all__ = ["HELP_TEXT", "OPT_IN_KEYWORDS", "OPT_OUT_KEYWORDS", "inbound", "status"]

OPT_OUT_KEYWORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"}
)
OPT_IN_KEYWORDS = frozenset({"start", "unstop"})
HELP_KEYWORD = "help"
HELP_TEXT = (
    "Loyalty program messages. Reply STOP to unsubscribe, START to resubscribe. "
    "Msg & data rates may apply."
)
OPTED_OUT_CODE = "21610"
_STATUS = {
    "delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
}
_MAX_FIELDS = 100
_TWIML = "text/xml"


async def _verified_form(request: Request, ctx: Context) -> dict[str, str] | Response:
    """The request's form fields when its signature holds, else the reply to give."""
    token, public_url = ctx.settings.twilio_auth_token, ctx.settings.public_url
    if not token:
        return unconfigured("TWILIO_AUTH_TOKEN is not set")
    if not public_url:
        return unconfigured("LOYALCAST_PUBLIC_URL is not set (Twilio signs the public URL)")
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return forbidden("twilio", "no signature", request)
    async with request.form(max_files=0, max_fields=_MAX_FIELDS) as form:
        if not all(isinstance(value, str) for _, value in form.multi_items()):
            return forbidden("twilio", "unexpected form content", request)
        url = public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        if not RequestValidator(token).validate(url, form, signature):
            return forbidden("twilio", "signature does not match", request)
        return {key: str(value) for key, value in form.items()}


async def status(request: Request) -> Response:
    """``POST /webhooks/twilio/status``: a message status callback (204)."""
    ctx = context(request)
    form = await _verified_form(request, ctx)
    if isinstance(form, Response):
        return form
    delivery_id = _delivery_id(request.query_params.get("delivery"))
    await run_in_threadpool(_apply_status, ctx, form, delivery_id)
    return Response(status_code=204)


def _delivery_id(value: str | None) -> int | None:
    """The delivery named by the signed callback URL's ``delivery`` parameter, if any."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        # Signed, so it is a URL we gave Twilio: say so, and match by SID.
        log.warning("twilio status callback with a malformed delivery id", delivery=value[:32])
        return None
    return int(value)


def _apply_status(ctx: Context, form: Mapping[str, str], delivery_id: int | None) -> None:
    sid = form.get("MessageSid") or form.get("SmsSid")
    reported = form.get("MessageStatus") or form.get("SmsStatus") or ""
    code = form.get("ErrorCode") or None
    new = _STATUS.get(reported)
    if not sid or (new is None and code != OPTED_OUT_CODE):
        return
    with ctx.sessions.begin() as session:
        if new is not None:
            moved = apply_provider_status(
                session,
                delivery_id=delivery_id,
                provider_message_id=sid,
                status=new,
                reason=None if new is DeliveryStatus.DELIVERED else f"provider:{code or reported}",
                detail=f"Twilio reported {reported}" + (f" (error {code})" if code else ""),
            )
            log.info(
                "twilio status", status=reported, error_code=code, delivery=delivery_id, moved=moved
            )
        if code == OPTED_OUT_CODE:
            to = form.get("To", "")
            member_ids = {m.id for m in find_members_by_phone(session, to)} if to else set()
            sent_as = (
                Delivery.provider_message_id == sid
                if delivery_id is None
                else Delivery.id == delivery_id
            )
            member_ids.update(session.scalars(select(Delivery.member_id).where(sent_as)))
            for member_id in sorted(member_ids):
                set_consent(
                    session,
                    member_id,
                    "sms",
                    ConsentStatus.OPTED_OUT,
                    source="twilio-21610",
                    detail=f"Twilio error 21610 on message {sid}",
                )


async def inbound(request: Request) -> Response:
    """``POST /webhooks/twilio/inbound``: an SMS from a member; answers TwiML."""
    ctx = context(request)
    form = await _verified_form(request, ctx)
    if isinstance(form, Response):
        return form
    keyword = form.get("Body", "").strip().casefold()
    if keyword == HELP_KEYWORD:
        return _twiml(HELP_TEXT)
    new = (
        ConsentStatus.OPTED_OUT
        if keyword in OPT_OUT_KEYWORDS
        else ConsentStatus.OPTED_IN
        if keyword in OPT_IN_KEYWORDS
        else None
    )
    if new is not None:
        await run_in_threadpool(_keyword, ctx, form.get("From", ""), new, keyword)
    return _twiml(None)


def _keyword(ctx: Context, phone: str, new: ConsentStatus, keyword: str) -> None:
    with ctx.sessions.begin() as session:
        members = find_members_by_phone(session, phone) if phone else []
        changed = [
            set_consent(session, m.id, "sms", new, source="sms-keyword", detail=keyword.upper())
            for m in members
        ]
    log.info("sms keyword", keyword=keyword.upper(), members=len(members), changed=sum(changed))


def _twiml(message: str | None) -> Response:
    body = f"<Message>{escape(message)}</Message>" if message else ""
    xml = '<?xml version="1.0" encoding="UTF-8"?>' + (
        f"<Response>{body}</Response>" if body else "<Response/>"
    )
    return Response(xml, media_type=_TWIML)
