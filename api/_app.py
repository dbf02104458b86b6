"""The ASGI app: routes, shared context, health check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from loyalcast.settings import Settings
from store import make_engine, make_sessionmaker

from . import _campaigns, _events, _openapi, _sendgrid, _twilio, _unsubscribe
from ._common import Context, context, log
from ._limits import BodyLimit

__all__ = ["create_app"]


def create_app(
    settings: Settings, sessions: sessionmaker[Session] | None = None, broker: Any = None
) -> Starlette:
    """Build the HTTP API.

    Routes:

    - ``POST /webhooks/twilio/status``: message status callbacks (204).
    - ``POST /webhooks/twilio/inbound``: inbound SMS keywords (TwiML).
    - ``POST /webhooks/sendgrid/events``: the signed Event Webhook (200).
    - ``GET``/``POST /unsubscribe/{token}``: confirmation page / unsubscribe.
    - ``POST /events/enrollment``: start welcome sequences (bearer token; 202).
    - ``GET /healthz``: ``ok`` once the database answers.
    - ``/campaigns...``: the campaign API (:mod:`api._campaigns`), bearer token.
    - ``GET /openapi.json``: the campaign API's OpenAPI 3.1 document.

    A webhook with a bad or missing signature gets 403 and changes nothing; a
    webhook whose secret is not configured gets 503 naming the setting. A
    body over ``LOYALCAST_API_MAX_BODY_BYTES`` gets 413 on every route
    (:mod:`api._limits`).

    Args:
        settings: the configuration (secrets, ``public_url``, signing key).
        sessions: sessions on the store; by default an engine on
            ``settings.effective_database_url``, disposed at shutdown.
        broker: where event intake enqueues work that is due at once; by
            default a broker on ``LOYALCAST_REDIS_URL`` when it is set (closed
            at shutdown), else none (the sweeper enqueues that work).

    Returns:
        The Starlette application.
    """
    engine: Engine | None = None
    if sessions is None:
        engine = make_engine(settings.effective_database_url)
        sessions = make_sessionmaker(engine)
    sendgrid_key, problem = _sendgrid.load_public_key(settings.sendgrid_webhook_public_key)
    ctx = Context(
        settings=settings,
        sessions=sessions,
        signing_key=settings.signing_key(),
        sendgrid_key=sendgrid_key,
        sendgrid_key_problem=problem,
    )

    own_broker = broker is None and bool(settings.redis_url)
    if own_broker:
        from workers import make_broker

        broker = make_broker(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        _campaigns.close_runtime(_app.state)
        if own_broker:
            from workers import close_broker

            close_broker(broker)
        if engine is not None:
            engine.dispose()

    app = Starlette(
        routes=[
            Route("/webhooks/twilio/status", _twilio.status, methods=["POST"]),
            Route("/webhooks/twilio/inbound", _twilio.inbound, methods=["POST"]),
            Route("/webhooks/sendgrid/events", _sendgrid.events, methods=["POST"]),
            Route("/unsubscribe/{token}", _unsubscribe.confirm_page, methods=["GET"]),
            Route("/unsubscribe/{token}", _unsubscribe.unsubscribe, methods=["POST"]),
            Route("/events/enrollment", _events.enrollment, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/campaigns/validate", _campaigns.validate, methods=["POST"]),
            Route("/campaigns/forecast", _campaigns.forecast_campaign, methods=["POST"]),
            Route("/campaigns", _campaigns.create, methods=["POST"]),
            Route("/campaigns/{name}", _campaigns.status, methods=["GET"]),
            Route("/campaigns/{name}/schedule", _campaigns.schedule, methods=["POST"]),
            Route("/campaigns/{name}/cancel", _campaigns.cancel, methods=["POST"]),
            Route("/campaigns/{name}/pause", _campaigns.pause, methods=["POST"]),
            Route("/campaigns/{name}/resume", _campaigns.resume, methods=["POST"]),
            Route("/campaigns/{name}/replan", _campaigns.replan, methods=["POST"]),
            Route("/openapi.json", _openapi.openapi, methods=["GET"]),
        ],
        middleware=[Middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)],
        lifespan=lifespan,
    )
    app.state.loyalcast = ctx
    app.state.loyalcast_broker = broker
    return app


async def healthz(request: Request) -> PlainTextResponse:
    """``GET /healthz``: ``ok`` after a ``SELECT 1``; 503 when the database does not answer."""
    ctx = context(request)
    try:
        await run_in_threadpool(_ping, ctx)
    except SQLAlchemyError as exc:
        log.error("health check failed", error=type(exc).__name__)
        return PlainTextResponse("database unavailable\n", status_code=503)
    return PlainTextResponse("ok")


def _ping(ctx: Context) -> None:
    with ctx.sessions() as session:
        session.execute(text("SELECT 1"))
