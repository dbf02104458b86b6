"""What every route shares: the app's context and the few standard replies."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from loyalcast.settings import Settings

__all__ = ["Context", "authorized", "context", "forbidden", "log", "unconfigured"]

log = structlog.get_logger("api")


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything a request handler needs, built once by ``create_app``."""

    settings: Settings
    sessions: sessionmaker[Session]
    signing_key: bytes
    sendgrid_key: Any | None
    """The SendGrid verification key, parsed; ``None`` when unset or malformed."""
    sendgrid_key_problem: str | None
    """Why ``sendgrid_key`` is ``None``, naming the setting; ``None`` when it is usable."""


def context(request: Request) -> Context:
    """The app's :class:`Context`."""
    ctx: Context = request.app.state.loyalcast
    return ctx


def forbidden(provider: str, problem: str, request: Request) -> PlainTextResponse:
    """403 for a webhook whose signature does not hold; logs why, never the signature."""
    log.warning("webhook refused", provider=provider, path=request.url.path, problem=problem)
    return PlainTextResponse("forbidden: invalid or missing signature\n", status_code=403)


def unconfigured(problem: str) -> PlainTextResponse:
    """503 for a webhook whose secret is not configured; ``problem`` names the setting.

    Not a 403: the request may be genuine, and the provider retries a 5xx,
    so nothing is lost while the operator fixes the configuration.
    """
    log.error("webhook not configured", problem=problem)
    return PlainTextResponse(f"webhook not configured: {problem}\n", status_code=503)


def authorized(request: Request) -> JSONResponse | None:
    """``None`` when the request carries ``Authorization: Bearer <LOYALCAST_API_TOKEN>``.

    Otherwise the reply to send: 503 when no token is configured (the
    endpoints are off), 401 with ``WWW-Authenticate`` when the token is
    missing or wrong (compared in constant time; never logged).
    """
    token = context(request).settings.api_token
    if not token:
        return JSONResponse(
            {"error": "the API is not configured: set LOYALCAST_API_TOKEN"}, status_code=503
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        log.warning("api request refused", path=request.url.path, problem="bad or missing token")
        return JSONResponse(
            {"error": "missing or invalid bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="loyalcast"'},
        )
    return None
