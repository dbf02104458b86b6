"""A ceiling on request bodies, for every route: 413 before a byte too many is held.

Every endpoint reads its whole body before acting on it, and the webhooks
must, before anyone is authenticated: a signature covers the body, so it can
only be checked once the body is in memory. Without a ceiling one request
could make the process hold as much as it cares to send. The ceiling is
``LOYALCAST_API_MAX_BODY_BYTES`` (default 4 MiB, several times the largest
request loyalcast expects: a SendGrid event batch, or a campaign file with
its templates).

A request that declares a larger ``Content-Length`` is answered 413 without
its body being read. One that does not declare it (chunked) is counted as it
arrives, and refused with 413 as soon as it passes the ceiling: the route's
read of its body fails, so the route acts on none of it. The reply is JSON
``{"error": ...}``, as the campaign API's other errors are.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._common import log

__all__ = ["BodyLimit"]


class BodyLimit:
    """ASGI middleware: refuse HTTP request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:  # a route that answers before reading its body: nothing to replace
                raise
            await self._refuse(scope, receive, send, received)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        log.warning(
            "request body too large", path=scope.get("path"), size=size, limit=self.max_bytes
        )
        detail = (
            f"request body too large: the limit is {self.max_bytes:,} bytes"
            " (LOYALCAST_API_MAX_BODY_BYTES)"
        )
        await JSONResponse({"error": detail}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    """Raised from the request's ``receive`` once the body has passed the limit."""


def _content_length(scope: Scope) -> int | None:
    """The declared ``Content-Length``; ``None`` when absent or not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
