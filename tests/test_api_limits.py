"""Request bodies over LOYALCAST_API_MAX_BODY_BYTES are refused with 413 on every route."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openapi_core import OpenAPI

from .test_api import (
    SENDGRID_KEY,
    SG_SIGNATURE,
    SG_TIMESTAMP,
    Api,
    seed,
    sendgrid_signature,
    start_api,
)
from .test_api_campaigns import Client
from .test_api_sendgrid import email_delivery, event, row

LIMIT = 4096
TOKEN = "limits-test-token"


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Api]:
    with start_api(database_url, tmp_path, api_max_body_bytes=LIMIT, api_token=TOKEN) as a:
        yield a


def _signed_headers(payload: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        SG_TIMESTAMP: timestamp,
        SG_SIGNATURE: sendgrid_signature(payload, timestamp, SENDGRID_KEY),
        "Content-Type": "application/json",
    }


def _batch(delivery_id: int, size: int) -> str:
    """A signed-able event batch of at least ``size`` bytes: a delivered event, then padding."""
    events = [event("delivered", delivery_id)]
    while len(json.dumps(events)) < size:
        events.append(event("processed", None))
    return json.dumps(events)


def test_a_signed_batch_within_the_limit_is_applied(app: Api) -> None:
    _, delivery_id = email_delivery(app)
    payload = _batch(delivery_id, LIMIT - 400)
    assert len(payload) <= LIMIT

    reply = app.client.post(
        "/webhooks/sendgrid/events", content=payload, headers=_signed_headers(payload)
    )

    assert reply.status_code == 200
    assert row(app, delivery_id) == ("delivered", None)


def test_a_declared_body_over_the_limit_is_refused_unread(app: Api) -> None:
    # Given a genuinely signed batch one byte too many
    _, delivery_id = email_delivery(app)
    payload = _batch(delivery_id, LIMIT + 1)
    before = app.snapshot()

    # When it is posted with its Content-Length
    reply = app.client.post(
        "/webhooks/sendgrid/events", content=payload, headers=_signed_headers(payload)
    )

    # Then 413 names the limit and its setting, and nothing changed
    assert reply.status_code == 413
    assert reply.json() == {
        "error": f"request body too large: the limit is {LIMIT:,} bytes"
        " (LOYALCAST_API_MAX_BODY_BYTES)"
    }
    assert app.snapshot() == before


def test_a_chunked_body_over_the_limit_is_refused_as_it_passes_it(app: Api) -> None:
    # Given a signed batch over the limit, sent in chunks without a Content-Length
    _, delivery_id = email_delivery(app)
    payload = _batch(delivery_id, 3 * LIMIT)
    before = app.snapshot()
    chunks = [payload[i : i + 1000].encode() for i in range(0, len(payload), 1000)]

    reply = app.client.post(
        "/webhooks/sendgrid/events", content=iter(chunks), headers=_signed_headers(payload)
    )

    assert reply.status_code == 413
    assert "LOYALCAST_API_MAX_BODY_BYTES" in reply.json()["error"]
    assert app.snapshot() == before


def test_a_chunked_body_within_the_limit_is_read_whole(app: Api) -> None:
    _, delivery_id = email_delivery(app)
    payload = _batch(delivery_id, LIMIT - 400)
    chunks = [payload[i : i + 500].encode() for i in range(0, len(payload), 500)]

    reply = app.client.post(
        "/webhooks/sendgrid/events", content=iter(chunks), headers=_signed_headers(payload)
    )

    assert reply.status_code == 200
    assert row(app, delivery_id) == ("delivered", None)


def test_the_campaign_api_and_twilio_callbacks_share_the_limit(app: Api) -> None:
    seed(app)
    before = app.snapshot()
    campaign = "name: huge\n# " + "x" * LIMIT + "\n"
    documented = Client(app.client, OpenAPI.from_dict(app.client.get("/openapi.json").json()), None)

    # (the campaign API's 413 is checked against its OpenAPI document)
    created = documented.post(
        "/campaigns",
        content=campaign,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/yaml"},
    )
    callback = app.twilio(
        "/webhooks/twilio/status",
        {"MessageSid": "SM1", "MessageStatus": "delivered", "Padding": "x" * LIMIT},
    )

    assert (created.status_code, callback.status_code) == (413, 413)
    assert app.snapshot() == before
