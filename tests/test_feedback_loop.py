"""The loop closes: what members tell providers stops the next message before it is sent.

Real SDKs send through the fakes; the replies come back through the real API
with real signatures; the next campaign's deliver job then finds the opt-out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from api import create_app
from channels.fakes.sendgrid import DEFAULT_API_KEY, FakeSendGrid
from channels.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from scheduler import claim_due_runs
from store import Delivery
from workers import Runtime
from workers.delivery import deliver_batch
from workers.planning import plan_run

from .support import OPEN_PROGRAM, add_member, create, sessions_for, settings_for, write_campaign

pytestmark = [pytest.mark.usefixtures("provider_specs")]

PUBLIC = "https://loyalty.example"


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture(scope="module")
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture
def world(database_url: str, tmp_path: Path, twilio: FakeTwilio, sendgrid: FakeSendGrid):
    """Live SMS and email against the fakes, the API, and one member reachable on both."""
    twilio.reset()
    sendgrid.reset()
    settings = dataclasses.replace(
        settings_for(database_url, tmp_path),
        public_url=PUBLIC,
        twilio_account_sid=DEFAULT_ACCOUNT_SID,
        twilio_auth_token=DEFAULT_AUTH_TOKEN,
        twilio_from_number="+15005550006",
        twilio_base_url=twilio.url,
        sendgrid_api_key=DEFAULT_API_KEY,
        sendgrid_from_email="rewards@loyalty.example",
        sendgrid_api_host=sendgrid.url,
        sendgrid_webhook_public_key=sendgrid.public_key_b64,
    )
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        member = add_member(
            s,
            phone="+14155550199",
            email="ada@example.com",
            consents={"sms": "opted_in", "email": "opted_in"},
        )
    rt = Runtime(settings, program=OPEN_PROGRAM)
    client = TestClient(create_app(settings, sessions), base_url=PUBLIC)
    yield {
        "settings": settings,
        "sessions": sessions,
        "rt": rt,
        "client": client,
        "member": member.id,
        "tmp": tmp_path,
    }
    client.close()
    rt.close()


def _broadcast(world: dict[str, Any], name: str, channels: str) -> Delivery:
    """Create a campaign due now, plan and deliver it; return the member's delivery row."""
    sessions = world["sessions"]
    created = create(sessions, write_campaign(world["tmp"], name=name, channels=channels))
    claim_due_runs(sessions)
    plan_run(world["rt"], created.run_id)
    with sessions() as s:
        ids = list(s.scalars(select(Delivery.id).where(Delivery.run_id == created.run_id)))
    deliver_batch(world["rt"], ids)
    with sessions() as s:
        return s.scalars(select(Delivery).where(Delivery.run_id == created.run_id)).one()


def test_after_a_stop_reply_the_next_sms_is_not_sent(world, twilio):
    """STOP by SMS opts the member out; the next SMS campaign suppresses them unsent."""
    # Given a first SMS that reached the member
    first = _broadcast(world, "sms-one", "[sms]")
    assert first.status == "sent"
    assert len(twilio.messages) == 1
    # When the member replies " Stop " and Twilio posts it, signed, to our API
    params = {
        "From": "+14155550199",
        "To": "+15005550006",
        "Body": " Stop ",
        "MessageSid": "SM" + "1" * 32,
        "AccountSid": DEFAULT_ACCOUNT_SID,
    }
    url = f"{PUBLIC}/webhooks/twilio/inbound"
    signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(url, params)
    reply = world["client"].post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert reply.status_code == 200
    # Then the next SMS campaign is suppressed for consent and Twilio gets nothing more
    second = _broadcast(world, "sms-two", "[sms]")
    assert (second.status, second.reason) == ("suppressed", "consent")
    assert "sms: opted out" in second.detail
    assert len(twilio.messages) == 1


def test_after_an_unsubscribe_click_the_next_marketing_email_is_not_sent(world, sendgrid):
    """The one-click List-Unsubscribe POST opts out; the next marketing email is suppressed."""
    # Given a marketing email whose List-Unsubscribe header links to our API
    first = _broadcast(world, "mail-one", "[email]")
    assert first.status == "sent"
    [mail] = sendgrid.mails
    link = mail.headers["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"{PUBLIC}/unsubscribe/")
    # When the mail client performs the RFC 8058 one-click POST
    reply = world["client"].post(
        link,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 200
    # Then the next marketing email is suppressed and SendGrid gets nothing more
    second = _broadcast(world, "mail-two", "[email]")
    assert (second.status, second.reason) == ("suppressed", "consent")
    assert len(sendgrid.mails) == 1


def test_after_a_sendgrid_unsubscribe_event_the_next_marketing_email_is_not_sent(world, sendgrid):
    """A signed SendGrid 'unsubscribe' event opts out; a forged one changes nothing."""
    first = _broadcast(world, "mail-one", "[email]")
    assert first.status == "sent"
    [mail] = sendgrid.mails
    body, headers = sendgrid.signed_events([sendgrid.event("unsubscribe", mail)])
    url = f"{PUBLIC}/webhooks/sendgrid/events"
    # A forged copy (one byte changed) is refused and changes nothing
    forged = world["client"].post(
        url, content=body.replace(b"unsubscribe", b"unsubscribf"), headers=headers
    )
    assert forged.status_code == 403
    assert _broadcast(world, "mail-two", "[email]").status == "sent"
    # When SendGrid posts the real, signed event
    assert world["client"].post(url, content=body, headers=headers).status_code == 200
    # Then the next marketing email is suppressed
    third = _broadcast(world, "mail-three", "[email]")
    assert (third.status, third.reason) == ("suppressed", "consent")
    assert len(sendgrid.mails) == 2


def test_twilio_21610_fails_the_sms_and_records_the_opt_out(world, twilio):
    """Twilio's 21610 (recipient unsubscribed) fails this SMS and stops the next one unsent."""
    # Given Twilio answering the next message with 21610
    twilio.fail_next(21610)
    # When an SMS campaign goes out
    first = _broadcast(world, "sms-one", "[sms]")
    # Then that delivery failed with the reason, and the member's SMS consent says so
    assert (first.status, first.reason) == ("failed", "opted_out")
    second = _broadcast(world, "sms-two", "[sms]")
    assert (second.status, second.reason) == ("suppressed", "consent")
    assert "via provider:21610" in second.detail
    assert twilio.messages == []


def test_a_failure_reported_before_the_worker_records_the_sid_stands(world, twilio):
    """Twilio's callback can reach the API before the answer to the request reaches the worker.

    The report finds the delivery by the id in its callback URL while the row is
    still ``sending``; the worker's record then adds the SID and keeps the failure.
    """
    # Given Twilio posting "undelivered" (30007) for each message before answering its request
    statuses_seen: list[str | int] = []

    def report_first(resource: dict[str, Any], url: str | None) -> None:
        assert url is not None
        with world["sessions"]() as s:
            delivery_id = int(url.rsplit("delivery=", 1)[1])
            statuses_seen.append(s.get(Delivery, delivery_id).status)
        form = twilio.status_callback_form(resource["sid"], "undelivered", {"ErrorCode": "30007"})
        signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(url, form)
        reply = world["client"].post(url, data=form, headers={"X-Twilio-Signature": signature})
        statuses_seen.append(reply.status_code)

    twilio.on_accept(report_first)
    # When an SMS campaign goes out
    row = _broadcast(world, "sms-one", "[sms]")
    # Then the callback came while the row was sending, and was applied
    assert statuses_seen == ["sending", 204]
    [message] = twilio.messages
    assert twilio.status_callbacks[message["sid"]] == (
        f"{PUBLIC}/webhooks/twilio/status?delivery={row.id}"
    )
    # And the delivery says failed, with Twilio's code, the SID and when it was sent
    assert (row.status, row.reason) == ("failed", "provider:30007")
    assert (row.provider_message_id, row.lease_until) == (message["sid"], None)
    assert row.sent_at is not None
