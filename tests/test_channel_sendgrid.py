"""SendGridEmailChannel on the real sendgrid SDK, against FakeSendGrid (spec-validated)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest
from openapi_core.validation.request.exceptions import InvalidRequestBody
from sendgrid.helpers.eventwebhook import EventWebhook

from channels import (
    Channel,
    InvalidRecipient,
    Message,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
)
from channels.fakes import FakeProvider, SpecUnavailable, json_response, load_spec
from channels.fakes.sendgrid import (
    DEFAULT_API_KEY,
    MAIL_SEND,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    FakeSendGrid,
    custom_args_is_an_object,
    subject_and_content_optional,
)
from channels.fakes.specs import Overlay
from channels.sendgrid import SendGridEmailChannel

from .support import RecordingLimiter

pytestmark = [pytest.mark.usefixtures("provider_specs")]

SENDER = "Rewards <rewards@example.com>"
UNSUBSCRIBE = "https://loyalcast.example/u/s1gned-t0ken"


def _no_spec(exc: SpecUnavailable) -> None:
    """Skip on a laptop, fail under CI, when the pinned spec cannot be had."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"SendGrid spec unavailable: {exc}")
    pytest.skip(f"SendGrid spec unavailable: {exc}")


def new_fake() -> FakeSendGrid:
    try:
        return FakeSendGrid()
    except SpecUnavailable as exc:
        _no_spec(exc)
        raise


def sendgrid_spec(*overlays: Overlay) -> OpenAPI:
    try:
        return load_spec("sendgrid", overlays=overlays)
    except SpecUnavailable as exc:
        _no_spec(exc)
        raise


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSendGrid]:
    """One running fake for the module (stopping a server takes half a second)."""
    provider = new_fake()
    with provider:
        yield provider


@pytest.fixture
def fake(server: FakeSendGrid) -> Iterator[FakeSendGrid]:
    """The module's fake, emptied; every request of the test must pass spec validation."""
    server.reset()
    yield server
    assert server.invalid == []


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
def channel(fake: FakeSendGrid, limiter: RecordingLimiter) -> SendGridEmailChannel:
    return SendGridEmailChannel(DEFAULT_API_KEY, SENDER, host=fake.url, limiter=limiter)


def message(
    delivery_id: int,
    to: str,
    *,
    subject: str = "120 points expire on 3 Dec",
    category: str = "service",
    campaign: str = "points-expiry",
    unsubscribe: str | None = None,
    text: str = "Use them before 3 Dec.",
) -> Message:
    return Message(
        delivery_id=delivery_id,
        dedupe_key=f"expiry:{delivery_id}:2026-12-03:7",
        member_id=delivery_id + 1000,
        channel="email",
        to=to,
        parts={"subject": subject, "html": f"<p>{text}</p>", "text": text},
        category=category,
        campaign=campaign,
        metadata={} if unsubscribe is None else {"unsubscribe_url": unsubscribe},
    )


def sends(fake: FakeSendGrid) -> list[dict[str, Any]]:
    """The JSON body of every mail/send request, in order."""
    return [r.json() for r in fake.calls("POST", MAIL_SEND)]


def recipients(body: dict[str, Any]) -> list[str]:
    return [p["to"][0]["email"] for p in body["personalizations"]]


def one_click(url: str) -> dict[str, str]:
    """The RFC 8058 headers for ``url``."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def test_it_is_a_live_email_channel(channel: SendGridEmailChannel) -> None:
    """The channel meets the Channel protocol: live email, batches of up to 1000."""
    assert isinstance(channel, Channel)
    assert (channel.name, channel.live, channel.max_batch) == ("email", True, 1000)


def test_an_empty_api_key_is_refused_not_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK would fall back to $SENDGRID_API_KEY; the channel never reads the environment."""
    # Given a key in the environment
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.from-the.environment")
    # When a channel is built with an empty key, Then it is refused
    with pytest.raises(ValueError, match="api_key is empty"):
        SendGridEmailChannel("", SENDER)


def test_shared_content_is_one_request_with_personalizations_in_message_order(
    fake: FakeSendGrid, channel: SendGridEmailChannel, limiter: RecordingLimiter
) -> None:
    """Identical mails to five members go as one request, personalizations in message order."""
    # Given five messages with the same rendered content
    addresses = [f"member{i}@example.com" for i in range(5)]
    messages = [message(i, address) for i, address in enumerate(addresses)]
    # When they are sent as a batch
    outcomes = channel.send_batch(messages)
    # Then one request carried them, in order (add_personalization would prepend)
    bodies = sends(fake)
    assert len(bodies) == 1
    assert addresses == recipients(bodies[0])
    assert addresses == [m.to for m in fake.mails]
    assert limiter.waits == 1
    # And every message has a receipt with the request's X-Message-Id
    assert [type(o) for o in outcomes] == [Receipt] * 5
    assert {o.provider_message_id for o in outcomes if isinstance(o, Receipt)} == {
        fake.mails[0].message_id
    }


def test_categories_custom_args_and_content_reach_sendgrid(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """Categories are [campaign, category] in that order; custom_args carry our keys."""
    # Given a marketing message of a campaign
    sent = message(
        7,
        "ann@example.com",
        category="marketing",
        campaign="winter-double-points",
        unsubscribe=UNSUBSCRIBE,
    )
    # When it is sent
    channel.send_batch([sent])
    # Then SendGrid has it with our categories, custom args and parts
    mail = fake.mails[0]
    assert mail.categories == ("winter-double-points", "marketing")
    assert {"delivery_id": "7", "dedupe_key": sent.dedupe_key} == mail.custom_args
    assert (sent.parts["subject"], sent.parts["html"], sent.parts["text"]) == (
        mail.subject,
        mail.html,
        mail.text,
    )
    assert mail.from_email == "rewards@example.com"


def test_marketing_mail_carries_rfc8058_one_click_unsubscribe(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """Each marketing recipient gets its own List-Unsubscribe link and the One-Click header."""
    # Given two marketing messages with their members' signed links
    messages = [
        message(1, "ann@example.com", category="marketing", unsubscribe=UNSUBSCRIBE + "1"),
        message(2, "bob@example.com", category="marketing", unsubscribe=UNSUBSCRIBE + "2"),
    ]
    # When they are sent
    channel.send_batch(messages)
    # Then each personalization has its own headers
    assert [m.headers for m in fake.mails] == [
        one_click(UNSUBSCRIBE + "1"),
        one_click(UNSUBSCRIBE + "2"),
    ]


def test_marketing_without_unsubscribe_url_is_refused_without_a_request(
    fake: FakeSendGrid, channel: SendGridEmailChannel, limiter: RecordingLimiter
) -> None:
    """A marketing message without unsubscribe_url is refused, saying why; nothing is sent."""
    # When a marketing message without a link is sent
    (outcome,) = channel.send_batch([message(1, "ann@example.com", category="marketing")])
    # Then it is refused before any request
    assert isinstance(outcome, PermanentDeliveryError)
    assert "unsubscribe_url" in str(outcome)
    assert (fake.requests, limiter.waits) == ([], 0)


@pytest.mark.parametrize(("url", "headers"), [(None, {}), (UNSUBSCRIBE, one_click(UNSUBSCRIBE))])
def test_service_mail_has_unsubscribe_headers_only_when_given(
    fake: FakeSendGrid, channel: SendGridEmailChannel, url: str | None, headers: dict[str, str]
) -> None:
    """Service mail is sent either way, with the one-click headers when a link is given."""
    # When a service message is sent with or without a link
    (outcome,) = channel.send_batch([message(1, "ann@example.com", unsubscribe=url)])
    # Then it is sent, with the headers only when there was a link
    assert isinstance(outcome, Receipt)
    assert headers == fake.mails[0].headers


@pytest.mark.parametrize(
    "url", ["http://loyalcast.example/u/x", "https://x.example/a b", "mailto:u@x.example"]
)
def test_an_unsubscribe_url_that_is_not_plain_https_is_refused(
    fake: FakeSendGrid, channel: SendGridEmailChannel, url: str
) -> None:
    """RFC 8058 needs an HTTPS link; anything else is a bug upstream, not something to send."""
    (outcome,) = channel.send_batch(
        [message(1, "a@example.com", category="marketing", unsubscribe=url)]
    )
    assert isinstance(outcome, PermanentDeliveryError)
    assert fake.requests == []


def test_429_is_transient_until_the_reset_and_blocks_the_limiter(
    fake: FakeSendGrid, channel: SendGridEmailChannel, limiter: RecordingLimiter
) -> None:
    """X-RateLimit-Reset becomes retry_after and limiter.block; the rest of the batch waits too."""
    # Given SendGrid's limit resets in 30 seconds
    fake.rate_limit_next(30)
    # When two requests' worth of messages are sent
    outcomes = channel.send_batch(
        [message(1, "a@example.com"), message(2, "b@example.com", text="other")]
    )
    # Then both are transient, not before the reset, and only one request was made
    first, second = outcomes
    assert isinstance(first, TransientDeliveryError)
    assert isinstance(second, TransientDeliveryError)
    assert first.retry_after is not None
    assert 28 <= first.retry_after <= 31
    assert limiter.blocks == [first.retry_after]
    assert len(fake.requests) == 1


def test_a_limiter_with_no_slot_soon_defers_the_batch_without_a_request(fake: FakeSendGrid) -> None:
    """The shared bucket says wait too long: every message is transient, nothing is sent."""

    # Given a limiter whose next slot is 9 s away
    class Full(RecordingLimiter):
        def wait(self) -> None:
            raise TransientDeliveryError("rate limit: next slot in 9.0 s", retry_after=9.0)

    channel = SendGridEmailChannel(DEFAULT_API_KEY, SENDER, host=fake.url, limiter=Full())
    # When two requests' worth of messages are sent
    outcomes = channel.send_batch(
        [message(1, "a@example.com"), message(2, "b@example.com", text="x")]
    )
    # Then both wait for the slot, and SendGrid saw nothing
    assert [getattr(o, "retry_after", None) for o in outcomes] == [9.0, 9.0]
    assert fake.requests == []


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient(
    fake: FakeSendGrid, channel: SendGridEmailChannel, status: int
) -> None:
    """5xx from SendGrid: try again later."""
    fake.fail_next(status)
    (outcome,) = channel.send_batch([message(1, "a@example.com")])
    assert isinstance(outcome, TransientDeliveryError)
    assert str(status) == outcome.code


def test_a_timeout_is_transient_and_flagged_as_ambiguous() -> None:
    """No answer within the timeout: transient, saying SendGrid may have accepted it."""
    # Given a channel with a 0.5 s timeout and SendGrid answering after 2 s
    # (a fake of its own: the slow answer outlives the test)
    fake = new_fake()
    with fake:
        channel = SendGridEmailChannel(DEFAULT_API_KEY, SENDER, host=fake.url, timeout=0.5)
        fake.slow_next(2.0)
        # When a message is sent
        started = time.monotonic()
        (outcome,) = channel.send_batch([message(1, "a@example.com")])
    # Then it gives up after about the timeout with a transient error
    assert time.monotonic() - started < 1.5
    assert isinstance(outcome, TransientDeliveryError)
    assert (outcome.code, "may have accepted" in str(outcome)) == ("timeout", True)


def test_a_refused_connection_is_transient() -> None:
    """Nothing listening: transient."""
    channel = SendGridEmailChannel(DEFAULT_API_KEY, SENDER, host="http://127.0.0.1:9", timeout=1)
    (outcome,) = channel.send_batch([message(1, "a@example.com")])
    assert isinstance(outcome, TransientDeliveryError)


def test_a_wrong_api_key_is_permanent_and_names_the_setting(fake: FakeSendGrid) -> None:
    """401: permanent, pointing at SENDGRID_API_KEY; the rest of the batch is not tried."""
    # Given a channel with a key SendGrid does not know
    channel = SendGridEmailChannel("SG.wrong.key", SENDER, host=fake.url)
    # When two requests' worth of messages are sent
    outcomes = channel.send_batch(
        [message(1, "a@example.com"), message(2, "b@example.com", text="x")]
    )
    # Then both fail for good, naming the setting, after one request
    assert all(isinstance(o, PermanentDeliveryError) for o in outcomes)
    assert "check SENDGRID_API_KEY" in str(outcomes[0])
    assert (len(fake.requests), fake.mails) == (1, [])


def test_one_bad_address_in_a_group_fails_alone(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """SendGrid refuses the whole request; the named recipient fails, the others are resent."""
    # Given a group whose second address SendGrid refuses
    messages = [
        message(1, "ann@example.com"),
        message(2, "bob@@example.com"),
        message(3, "cat@example.com"),
    ]
    # When it is sent
    outcomes = channel.send_batch(messages)
    # Then only that message is an InvalidRecipient
    assert [Receipt, InvalidRecipient, Receipt] == [type(o) for o in outcomes]
    assert "personalizations.1.to.0.email" in str(outcomes[1])
    # And the others went in one more request
    assert [recipients(b) for b in sends(fake)] == [
        ["ann@example.com", "bob@@example.com", "cat@example.com"],
        ["ann@example.com", "cat@example.com"],
    ]
    assert [m.to for m in fake.mails] == ["ann@example.com", "cat@example.com"]


def test_a_lone_bad_address_is_an_invalid_recipient(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """A one-message request refused for its address: InvalidRecipient."""
    (outcome,) = channel.send_batch([message(1, "not valid@example.com")])
    assert isinstance(outcome, InvalidRecipient)


def test_a_400_naming_no_personalization_resends_each_message_alone(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """When the 400 does not say which message is wrong, each is tried on its own."""
    # Given SendGrid refuses the next request without naming a field
    fake.fail_next(400, [{"message": "Bad Request", "field": None, "help": None}])
    # When a group of three is sent
    outcomes = channel.send_batch([message(i, f"m{i}@example.com") for i in range(3)])
    # Then each was resent alone and accepted
    assert [len(b["personalizations"]) for b in sends(fake)] == [3, 1, 1, 1]
    assert all(isinstance(o, Receipt) for o in outcomes)


def test_a_400_about_the_shared_content_fails_the_group_without_resending(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """An error in a mail-wide field would fail each message alone too: no resends."""
    fake.fail_next(400, [{"message": "Invalid type.", "field": "content.0.value", "help": None}])
    outcomes = channel.send_batch([message(i, f"m{i}@example.com") for i in range(3)])
    assert all(type(o) is PermanentDeliveryError for o in outcomes)
    assert len(fake.requests) == 1


def test_more_than_1000_shared_messages_split_into_requests_of_1000(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """SendGrid takes 1000 personalizations per request; a larger batch is cut, order kept."""
    # Given 1001 messages with the same content
    messages = [message(i, f"m{i}@example.com") for i in range(1001)]
    # When they are sent
    outcomes = channel.send_batch(messages)
    # Then two requests carried them, in order
    assert [len(b["personalizations"]) for b in sends(fake)] == [1000, 1]
    assert [m.to for m in messages] == [m.to for m in fake.mails]
    assert all(isinstance(o, Receipt) for o in outcomes)


def test_events_are_signed_as_sendgrid_signs_them(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """The fake's webhook signature verifies with the SDK's EventWebhook and the shown key."""
    # Given a sent mail and an endpoint that records what it receives
    (receipt,) = channel.send_batch([message(42, "ann@example.com")])
    receiver = FakeProvider(None)
    receiver.route("POST", "/sendgrid/events", lambda r, p: json_response({"ok": True}))
    with receiver:
        # When a delivered event is posted to it
        event = fake.event("delivered", fake.mails[0], response="250 OK")
        response = fake.send_events(
            f"{receiver.url}/sendgrid/events", [event, fake.event("open", fake.mails[0])]
        )
    # Then the raw body verifies with the public key as SendGrid shows it
    assert response.status_code == 200
    got = receiver.requests[0]
    verifier = EventWebhook(fake.public_key_b64)
    payload = got.body.decode()
    signature, stamp = got.headers[SIGNATURE_HEADER], got.headers[TIMESTAMP_HEADER]
    assert verifier.verify_signature(payload, signature, stamp)
    # And a tampered body or timestamp does not
    assert not verifier.verify_signature(payload.replace("delivered", "bounce"), signature, stamp)
    assert not verifier.verify_signature(payload, signature, str(int(stamp) + 1))
    # And the event leads back to the delivery and the receipt
    (first, second) = json.loads(payload)
    assert isinstance(receipt, Receipt)
    # (custom_args at the top level; sg_message_id is the X-Message-Id, a dot, a suffix)
    assert first["delivery_id"] == "42"
    assert first["sg_message_id"].split(".")[0] == receipt.provider_message_id
    assert first["sg_event_id"] != second["sg_event_id"]
    assert (first["email"], first["event"], first["response"]) == (
        "ann@example.com",
        "delivered",
        "250 OK",
    )


def test_the_overlays_fix_the_two_known_spec_mismatches() -> None:
    """A template send with mail-level custom_args fails the published spec, passes overlaid."""
    # Given a body the live API accepts: a template, no subject or content, object custom_args
    body = {
        "from": {"email": "rewards@example.com"},
        "template_id": "d-0123456789abcdef",
        "personalizations": [{"to": [{"email": "ann@example.com"}]}],
        "custom_args": {"campaign": "welcome"},
    }
    request = MockRequest(
        "http://127.0.0.1",
        "post",
        MAIL_SEND,
        headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        data=json.dumps(body).encode(),
        content_type="application/json",
    )
    # When it is validated against the published spec or one overlay, Then it fails
    for overlays in [(), (custom_args_is_an_object,), (subject_and_content_optional,)]:
        with pytest.raises(InvalidRequestBody):
            sendgrid_spec(*overlays).validate_request(request)
    # When both overlays apply, Then it passes
    sendgrid_spec(custom_args_is_an_object, subject_and_content_optional).validate_request(request)


def test_send_raises_what_send_batch_returns(
    fake: FakeSendGrid, channel: SendGridEmailChannel
) -> None:
    """The one-message form raises the error instead of returning it."""
    fake.fail_next(503)
    with pytest.raises(TransientDeliveryError):
        channel.send(message(1, "a@example.com"))
    assert isinstance(channel.send(message(2, "b@example.com")), Receipt)
