"""The HTTP API as a whole: its surface, health, and refusing unsigned or unconfigured webhooks.

Every test runs against a real database (SQLite and PostgreSQL) with
signatures computed the way the providers compute them: Twilio with the SDK's
``RequestValidator.compute_signature``, SendGrid with an ECDSA P-256 key made
here. The :class:`Api` harness is shared by the other ``test_api_*`` modules.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

import api
from loyalcast.settings import Settings
from store import make_engine, make_sessionmaker
from store.models import Base
from workers.unsubscribe import make_token

from .support import add_member
from .test_feedback import add_delivery

PUBLIC_URL = "https://loyalcast.example.com"
TWILIO_TOKEN = "twilio-test-auth-token"
SECRET_KEY = "unsubscribe-test-key"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def sendgrid_signature(payload: str, timestamp: str, key: Any = SENDGRID_KEY) -> str:
    """What SendGrid sends: base64 DER ECDSA-SHA256 over timestamp + payload."""
    der = key.sign((timestamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


@dataclass
class Api:
    """A running app on a real database, and helpers to call it as the providers do."""

    client: TestClient
    sessions: sessionmaker[Session]
    settings: Settings

    def twilio(self, path: str, params: dict[str, str], signature: str | None = "valid"):
        """POST a form to ``path``, signed for the public URL unless told otherwise."""
        headers = {}
        if signature == "valid":
            signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, params)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        return self.client.post(path, data=params, headers=headers)

    def sendgrid(
        self, events: Any, *, age: float = 0, signature: str | None = "valid", key=SENDGRID_KEY
    ):
        """POST ``events`` as SendGrid does, signed with ``key`` ``age`` seconds ago."""
        payload = events if isinstance(events, str) else json.dumps(events)
        timestamp = str(int(time.time() - age))
        headers = {SG_TIMESTAMP: timestamp, "Content-Type": "application/json"}
        if signature == "valid":
            signature = sendgrid_signature(payload, timestamp, key)
        if signature is not None:
            headers[SG_SIGNATURE] = signature
        return self.client.post("/webhooks/sendgrid/events", content=payload, headers=headers)

    def token(self, member_id: int, channel: str) -> str:
        return make_token(SECRET_KEY.encode(), member_id, channel)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, in key order: equal snapshots mean nothing changed."""
        with self.sessions() as s:
            return {
                t.name: [tuple(r) for r in s.execute(select(t).order_by(*t.primary_key.columns))]
                for t in Base.metadata.sorted_tables
            }


@contextmanager
def start_api(database_url: str, tmp_path: Path, **overrides: Any) -> Iterator[Api]:
    """Yield an :class:`Api` whose settings are complete unless ``overrides`` says otherwise."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "public_url": PUBLIC_URL,
        "twilio_auth_token": TWILIO_TOKEN,
        "sendgrid_webhook_public_key": SENDGRID_PUBLIC,
        "secret_key": SECRET_KEY,
    }
    settings = Settings(**(values | overrides))
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    try:
        with TestClient(api.create_app(settings, sessions)) as client:
            yield Api(client=client, sessions=sessions, settings=settings)
    finally:
        engine.dispose()


def seed(a: Api, **member: Any) -> tuple[int, int]:
    """A member and a sent SMS delivery (provider id ``SM1``) to them: (member id, delivery id)."""
    with a.sessions.begin() as s:
        member_id = add_member(s, **member).id
        delivery_id = add_delivery(s, member_id, provider_message_id="SM1").id
    return member_id, delivery_id


@pytest.fixture
def app(database_url, tmp_path):
    with start_api(database_url, tmp_path) as a:
        yield a


def test_the_package_exports_create_app():
    """``api.create_app`` is the public surface."""
    assert api.__all__ == ["create_app"]


def test_healthz_answers_ok_after_asking_the_database(app):
    """GET /healthz is 200 ``ok`` when the database answers."""
    response = app.client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_healthz_is_503_when_the_database_is_gone(tmp_path):
    """A database that does not answer makes /healthz 503, not a crash."""
    # Given a PostgreSQL URL where nothing listens
    nowhere = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
    settings = Settings(data_dir=tmp_path, database_url=nowhere, secret_key=SECRET_KEY)
    # When /healthz is asked, Then it says the database is unavailable
    with TestClient(api.create_app(settings)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503


def _forgeries(a: Api) -> list:
    """Requests that look like the providers' but whose signatures do not hold."""
    stop = {"From": "+14155550100", "Body": "STOP", "MessageSid": "SM2"}
    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    # Signed for the URL the server sees rather than the public one
    seen_url = "http://testserver/webhooks/twilio/status"
    local = RequestValidator(TWILIO_TOKEN).compute_signature(seen_url, delivered)
    other_key = ec.generate_private_key(ec.SECP256R1())
    events = json.dumps([{"event": "unsubscribe", "email": "m@example.com", "sg_event_id": "e"}])
    return [
        lambda: a.twilio("/webhooks/twilio/inbound", stop, signature=None),
        lambda: a.twilio("/webhooks/twilio/inbound", stop, signature="c2lnbmF0dXJl"),
        lambda: a.twilio("/webhooks/twilio/status", delivered, signature=None),
        lambda: a.twilio("/webhooks/twilio/status", delivered, signature=local),
        lambda: a.client.post(  # a valid signature, for other parameters
            "/webhooks/twilio/status",
            data=delivered,
            headers={
                "X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(
                    PUBLIC_URL + "/webhooks/twilio/status", {**delivered, "MessageSid": "SM9"}
                )
            },
        ),
        lambda: a.sendgrid(events, signature=None),
        lambda: a.sendgrid(events, signature="bm90IGEgc2lnbmF0dXJl"),
        lambda: a.sendgrid(events, signature="%%% not base64 %%%"),
        lambda: a.sendgrid(events, key=other_key),
    ]


def test_forged_or_missing_signatures_are_refused_and_change_nothing(app):
    """Every webhook answers 403 to a bad or missing signature; the database stays as it was."""
    # Given a member with a phone, an email consent and a sent delivery
    seed(app, phone="+14155550100", email="m@example.com", consents={"sms": "opted_in"})
    before = app.snapshot()
    # When forged requests arrive
    statuses = [send().status_code for send in _forgeries(app)]
    # Then each is refused and every row is unchanged
    assert [403] * len(statuses) == statuses
    assert before == app.snapshot()


def test_a_sendgrid_request_without_timestamp_is_refused(app):
    """The signature covers the timestamp header, so a request without it is 403."""
    response = app.client.post(
        "/webhooks/sendgrid/events", content="[]", headers={SG_SIGNATURE: "c2ln"}
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("override", "path", "setting"),
    [
        ({"twilio_auth_token": None}, "/webhooks/twilio/status", "TWILIO_AUTH_TOKEN"),
        ({"twilio_auth_token": None}, "/webhooks/twilio/inbound", "TWILIO_AUTH_TOKEN"),
        ({"public_url": None}, "/webhooks/twilio/inbound", "LOYALCAST_PUBLIC_URL"),
        (
            {"sendgrid_webhook_public_key": None},
            "/webhooks/sendgrid/events",
            "SENDGRID_WEBHOOK_PUBLIC_KEY is not set",
        ),
        (
            {"sendgrid_webhook_public_key": "bm90IGEga2V5"},
            "/webhooks/sendgrid/events",
            "SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid",
        ),
    ],
)
def test_an_unconfigured_webhook_is_503_naming_the_setting(
    database_url, tmp_path, override, path, setting
):
    """Without its secret a webhook cannot tell genuine from forged: 503, not 403."""
    # Given an api missing one webhook setting
    with start_api(database_url, tmp_path, **override) as a:
        before = a.snapshot()
        # When the provider calls (with whatever signature)
        response = a.client.post(path, data={"Body": "STOP"}, headers={"X-Twilio-Signature": "x"})
        # Then it is told the service is not configured, and nothing changes
        assert response.status_code == 503
        assert setting in response.text
        assert before == a.snapshot()
