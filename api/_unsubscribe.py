"""Unsubscribe links: a confirmation page (GET) and the unsubscribe itself (POST).

``GET /unsubscribe/{token}`` only shows a page naming the channel and a
masked address, with one button: mail scanners and link previews follow links,
so a GET never changes anything. ``POST /unsubscribe/{token}`` opts the
token's member out of the token's channel (source ``unsubscribe-link``), both
for the page's button and for RFC 8058 one-click requests that mail clients
send with the body ``List-Unsubscribe=One-Click``; it answers 200 with a
short page, and doing it twice is harmless. A bad token, or one naming a
member that no longer exists, gets a 404 page and changes nothing.

Pages carry ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``
so the token in the URL leaks neither to other sites nor to shared caches;
logs name the member and channel, never the token.
"""

from __future__ import annotations

from html import escape

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from store import ConsentStatus, Member
from workers.feedback import set_consent
from workers.unsubscribe import BadToken, read_token

from ._common import Context, context, log

__all__ = ["confirm_page", "unsubscribe"]

SOURCE = "unsubscribe-link"
ONE_CLICK = "One-Click"
_CHANNEL_NAMES = {
    "email": "emails",
    "sms": "text messages (SMS)",
    "push": "push notifications",
    "direct_mail": "printed mail",
}
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; line-height: 1.5; margin: 0; padding: 2rem 1rem; }}
main {{ max-width: 32rem; margin: 0 auto; }}
button {{ font: inherit; padding: 0.6rem 1.2rem; cursor: pointer; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = _PAGE.format(title=escape(title), body=body)
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS)


def _not_found() -> HTMLResponse:
    return _page(
        "Link not valid",
        "<p>This unsubscribe link is not valid. Please use the link from a recent message.</p>",
        404,
    )


def _mask(member: Member, channel: str) -> str | None:
    """Enough of the address for a member to recognise it, not enough to harvest it."""
    if channel == "email" and member.email and "@" in member.email:
        local, _, domain = member.email.rpartition("@")
        return f"{local[:1]}•••@{domain}"
    if channel == "sms" and member.phone:
        return f"••• {member.phone[-4:]}"
    return None


def _what(member: Member, channel: str) -> str:
    name = _CHANNEL_NAMES.get(channel, channel)
    address = _mask(member, channel)
    return escape(name) + (f" to <strong>{escape(address)}</strong>" if address else "")


def _describe(ctx: Context, member_id: int, channel: str) -> str | None:
    with ctx.sessions() as session:
        member = session.get(Member, member_id)
        return None if member is None else _what(member, channel)


async def confirm_page(request: Request) -> HTMLResponse:
    """``GET /unsubscribe/{token}``: the confirmation page; changes nothing."""
    ctx = context(request)
    try:
        member_id, channel = read_token(ctx.signing_key, request.path_params["token"])
    except BadToken:
        return _not_found()
    what = await run_in_threadpool(_describe, ctx, member_id, channel)
    if what is None:
        return _not_found()
    body = (
        f"<p>Stop receiving our {what}?</p>\n"
        '<form method="post">\n'
        '<input type="hidden" name="confirm" value="yes">\n'
        '<button type="submit">Unsubscribe</button>\n'
        "</form>"
    )
    return _page("Unsubscribe", body)


async def unsubscribe(request: Request) -> HTMLResponse:
    """``POST /unsubscribe/{token}``: opt out (the page's button or RFC 8058 one-click)."""
    ctx = context(request)
    try:
        member_id, channel = read_token(ctx.signing_key, request.path_params["token"])
    except BadToken:
        return _not_found()
    how = "one-click (RFC 8058)" if await _one_click(request) else "confirmation page"
    what = await run_in_threadpool(_opt_out, ctx, member_id, channel, how)
    if what is None:
        return _not_found()
    return _page("You are unsubscribed", f"<p>You will no longer receive our {what}.</p>")


async def _one_click(request: Request) -> bool:
    """Whether the body is RFC 8058's ``List-Unsubscribe=One-Click`` (urlencoded or multipart)."""
    try:
        async with request.form(max_files=0, max_fields=10) as form:
            return form.get("List-Unsubscribe") == ONE_CLICK
    except (HTTPException, ValueError):  # a garbled body still unsubscribes; it only labels
        return False


def _opt_out(ctx: Context, member_id: int, channel: str, how: str) -> str | None:
    with ctx.sessions.begin() as session:
        member = session.get(Member, member_id)
        if member is None:
            return None
        what = _what(member, channel)
        changed = set_consent(
            session, member_id, channel, ConsentStatus.OPTED_OUT, source=SOURCE, detail=how
        )
    log.info("unsubscribed", member_id=member_id, channel=channel, via=how, changed=changed)
    return what
