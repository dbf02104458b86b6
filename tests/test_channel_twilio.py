"""TwilioSmsChannel, through the real twilio SDK, against FakeTwilio (checked by Twilio's spec)."""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.wrappers import Request, Response

from channels import (
    Channel,
    InvalidRecipient,
    Message,
    PermanentDeliveryError,
    Receipt,
    RecipientOptedOut,
    TransientDeliveryError,
)
from channels.fakes import FakeProvider, Scripted, SpecUnavailable
from channels.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio, twilio_spec
from channels.ratelimit import TokenBucket
from channels.twilio import TwilioSmsChannel

from .support import RecordingLimiter

pytestmark = [pytest.mark.usefixtures("provider_specs")]

SENDER = "+15005550006"
SERVICE = "MG" + "ab" * 16
MEMBER_PHONE = "+15551234567"
CALLBACK = "https://loyalty.example.com/webhooks/twilio/status"


@pytest.fixture(scope="module", autouse=True)
def _spec() -> None:
    """Twilio's spec, loaded once; skipped on a laptop without npm, a failure under CI."""
    try:
        twilio_spec()
    except SpecUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Twilio's OpenAPI spec is unavailable: {exc}")
        pytest.skip(f"Twilio's OpenAPI spec is unavailable: {exc}")


@pytest.fixture(scope="module")
def _fake_server() -> Iterator[FakeTwilio]:
    # One server per module: stopping one waits for its accept loop (about 0.5 s).
    server = FakeTwilio()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(_fake_server: FakeTwilio) -> FakeTwilio:
    """A running FakeTwilio with the default account SID and token, and nothing recorded."""
    _fake_server.reset()
    return _fake_server


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
def make_channel(
    fake: FakeTwilio, limiter: RecordingLimiter
) -> Iterator[Callable[..., TwilioSmsChannel]]:
    """Build channels pointed at the fake (a sender number and the recording limiter by default)."""
    built: list[TwilioSmsChannel] = []

    def make(**overrides: Any) -> TwilioSmsChannel:
        options: dict[str, Any] = {"base_url": fake.url, "limiter": limiter, "timeout": 5.0}
        if "messaging_service_sid" not in overrides:
            options["from_number"] = SENDER
        options.update(overrides)
        channel = TwilioSmsChannel(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, **options)
        built.append(channel)
        return channel

    yield make
    for channel in built:
        channel.close()


def sms(text: str = "You have 120 points expiring on 3 Dec.", **fields: Any) -> Message:
    values: dict[str, Any] = {
        "delivery_id": 1,
        "dedupe_key": "run:1:member:7",
        "member_id": 7,
        "channel": "sms",
        "to": MEMBER_PHONE,
        "parts": {"text": text},
        "category": "service",
        "campaign": "points-expiry",
    }
    values.update(fields)
    return Message(**values)


# --- success ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (CALLBACK, CALLBACK + "?delivery=42"),
        (CALLBACK + "?tenant=a%20b", CALLBACK + "?tenant=a%20b&delivery=42"),
    ],
)
def test_each_message_names_its_delivery_in_the_status_callback_url(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], configured, expected
) -> None:
    """The callback URL adds the delivery's id to the configured query, which is kept as written."""
    # Given a status callback URL, with or without a query of its own
    channel = make_channel(status_callback=configured)
    # When a batch of two is sent
    outcomes = channel.send_batch([sms(delivery_id=42), sms(delivery_id=43)])
    # Then Twilio was given, for each message, that URL naming its delivery
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert sorted(fake.status_callbacks.values()) == [expected, expected[:-2] + "43"]
    assert fake.invalid == []


def test_send_returns_a_receipt_with_the_message_sid(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], limiter: RecordingLimiter
) -> None:
    """A sent SMS returns Twilio's SM SID; the request is spec-valid, authenticated and complete."""
    # Given a channel with a sender number and a status callback
    channel = make_channel(status_callback=CALLBACK)
    # When a message is sent
    receipt = channel.send(sms())
    # Then the receipt holds the SID of the Message the fake created
    assert isinstance(receipt, Receipt)
    assert [receipt.provider_message_id] == [m["sid"] for m in fake.messages]
    assert receipt.provider_message_id.startswith("SM")
    assert receipt.accepted_at.tzinfo is not None
    # And the request passed Twilio's OpenAPI spec, with Basic auth of the account
    assert fake.invalid == []
    [request] = fake.calls("POST", r"/Messages\.json$")
    expected_auth = base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode())
    assert "Basic " + expected_auth.decode() == request.headers["Authorization"]
    assert f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json" == request.path
    # And the form carries To, From, Body and StatusCallback, and no Messaging Service
    form = request.form()
    assert form["To"] == [MEMBER_PHONE]
    assert form["From"] == [SENDER]
    assert [sms().parts["text"]] == form["Body"]
    assert form["StatusCallback"] == [CALLBACK + "?delivery=1"]
    assert "MessagingServiceSid" not in form
    # And the limiter was asked once, and never blocked
    assert (limiter.waits, limiter.blocks) == (1, [])


def test_the_sdks_request_narration_is_kept_for_debug(
    make_channel: Callable[..., TwilioSmsChannel], caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO a send logs nothing of the SDK's ~10 lines per request; at DEBUG they are there."""
    channel = make_channel()
    with caplog.at_level(logging.INFO):
        channel.send(sms())
    assert [r for r in caplog.records if r.name.startswith("twilio")] == []
    with caplog.at_level(logging.DEBUG, logger="twilio"):
        channel.send(sms())
    assert any("Response Status Code: 201" in r.getMessage() for r in caplog.records)


def test_messaging_service_replaces_the_sender_number(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """With a Messaging Service, MessagingServiceSid is sent and From is not."""
    # Given a channel with a Messaging Service and no status callback
    channel = make_channel(messaging_service_sid=SERVICE)
    # When a message is sent
    receipt = channel.send(sms())
    # Then the request names the service, no sender and no callback, and is spec-valid
    [request] = fake.requests
    form = request.form()
    assert form["MessagingServiceSid"] == [SERVICE]
    assert "From" not in form
    assert "StatusCallback" not in form
    assert fake.invalid == []
    assert ("accepted", receipt.provider_message_id) == (
        fake.messages[0]["status"],
        fake.messages[0]["sid"],
    )


def test_send_batch_keeps_order_and_isolates_failures(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """A recipient Twilio refuses fails alone; the others get receipts, in order."""
    # Given a channel (it satisfies the Channel protocol) and a number Twilio will refuse
    channel = make_channel()
    assert isinstance(channel, Channel)
    assert (channel.name, channel.live, channel.max_batch) == ("sms", True, 20)
    batch = [sms(delivery_id=1), sms(delivery_id=2, to="+1 555 nope"), sms(delivery_id=3)]
    # When the three are sent as a batch
    outcomes = channel.send_batch(batch)
    # Then the outcomes are receipt, invalid recipient (21211), receipt
    assert [Receipt, InvalidRecipient, Receipt] == [type(o) for o in outcomes]
    assert getattr(outcomes[1], "code", None) == "21211"
    assert len(fake.messages) == 2


class GrantingLimiter(RecordingLimiter):
    """Grants batches as scripted (then everything), or refuses once the script says None."""

    def __init__(self, grants: list[int | None]) -> None:
        super().__init__()
        self.grants = grants

    def acquire(self, count: int) -> int:
        self.acquired.append(count)
        if not self.grants:
            return count
        grant = self.grants.pop(0)
        if grant is None:
            raise TransientDeliveryError("rate limit: next slot in 9.0 s", retry_after=9.0)
        return min(grant, count)


def test_a_batch_takes_its_tokens_with_one_limiter_call(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], limiter: RecordingLimiter
) -> None:
    """One acquire for the sendable messages; a message refused before sending takes none."""
    channel = make_channel(concurrency=4)
    batch = [sms(delivery_id=i) for i in range(5)] + [sms("", delivery_id=9)]
    outcomes = channel.send_batch(batch)
    assert [Receipt] * 5 + [PermanentDeliveryError] == [type(o) for o in outcomes]
    assert (limiter.acquired, limiter.waits) == ([5], 0)
    assert len(fake.messages) == 5


def test_partial_grants_send_that_many_then_ask_again(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """Grants of 2, then 1, then the rest: every message sent once, in three rounds."""
    limiter = GrantingLimiter([2, 1])
    channel = make_channel(limiter=limiter, concurrency=4)
    outcomes = channel.send_batch([sms(delivery_id=i, to=f"+1555123456{i}") for i in range(6)])
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert limiter.acquired == [6, 4, 3]
    assert sorted(m["to"] for m in fake.messages) == [f"+1555123456{i}" for i in range(6)]


def test_messages_without_a_token_in_time_fail_transient(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """Granted messages go; the rest get the limiter's deferral, and are never sent."""
    limiter = GrantingLimiter([2, None])
    channel = make_channel(limiter=limiter, concurrency=4)
    outcomes = channel.send_batch([sms(delivery_id=i) for i in range(5)])
    assert [Receipt, Receipt] == [type(o) for o in outcomes[:2]]
    assert all(isinstance(o, TransientDeliveryError) and o.retry_after == 9.0 for o in outcomes[2:])
    assert len(fake.requests) == 2


def test_a_rate_limited_request_stops_the_rest_of_its_group(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], limiter: RecordingLimiter
) -> None:
    """After a 429 the group's unsent messages are not sent: transient, the same Retry-After."""
    channel = make_channel()  # one at a time, so the 429 comes first
    fake.rate_limit_next(retry_after=7)
    outcomes = channel.send_batch([sms(delivery_id=i) for i in range(3)])
    assert all(isinstance(o, TransientDeliveryError) and o.retry_after == 7.0 for o in outcomes)
    assert "not sent" in str(outcomes[2])
    assert (len(fake.requests), limiter.blocks) == (1, [7.0])


@pytest.mark.redis
def test_a_batch_through_a_real_bucket_keeps_to_the_rate(
    fake: FakeTwilio,
    make_channel: Callable[..., TwilioSmsChannel],
    redis_url: str,
    redis_namespace: str,
) -> None:
    """16 messages, 4 at a time, through a bucket of 40/s with a burst of 4: paced, all sent."""
    import redis

    client = redis.Redis.from_url(redis_url)
    bucket = TokenBucket(client, f"{redis_namespace}:rate:twilio", rate=40, burst=4)
    channel = make_channel(limiter=bucket, concurrency=4)
    started = time.time()
    outcomes = channel.send_batch([sms(delivery_id=i) for i in range(16)])
    client.close()
    assert all(isinstance(o, Receipt) for o in outcomes)
    times = sorted(r.at for r in fake.requests)
    # The bucket fills at its first use, after ``started``: the i-th token comes no
    # sooner than (i - 3) / 40 s after that, and a request follows its token. (Not
    # measured from the first request, which a loaded machine can delay.)
    for i in range(4, 16):
        assert times[i] - started >= (i - 3) / 40 - 0.02


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        pytest.param(21610, RecipientOptedOut, id="21610-opted-out"),
        pytest.param(21211, InvalidRecipient, id="21211-invalid-number"),
        pytest.param(21614, InvalidRecipient, id="21614-not-mobile"),
        pytest.param(30007, PermanentDeliveryError, id="unknown-code-is-permanent"),
        pytest.param(21408, PermanentDeliveryError, id="region-not-enabled-is-permanent"),
    ],
)
def test_twilio_error_codes_map_to_the_closed_error_set(
    fake: FakeTwilio,
    make_channel: Callable[..., TwilioSmsChannel],
    limiter: RecordingLimiter,
    code: int,
    kind: type[PermanentDeliveryError],
) -> None:
    """Each Twilio code maps to its error kind, keeping the code and Twilio's message."""
    # Given Twilio answering the next message with an error code
    channel = make_channel()
    fake.fail_next(code, message=f"Twilio says {code}")
    # When a message is sent
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(sms())
    # Then the error is exactly the mapped kind, with Twilio's code and message
    assert kind is type(caught.value)
    assert str(code) == caught.value.code
    assert f"Twilio says {code}" in caught.value.detail
    # And nothing blocked the limiter
    assert limiter.blocks == []


def test_rate_limit_is_transient_and_blocks_the_limiter(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], limiter: RecordingLimiter
) -> None:
    """HTTP 429 (20429) with Retry-After is transient with that delay, shared via the limiter."""
    # Given Twilio rate limiting the next request for 7 seconds
    channel = make_channel()
    fake.rate_limit_next(retry_after=7)
    # When a message is sent
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(sms())
    # Then it is transient, retry after 7 s, code 20429, and the limiter is blocked 7 s
    assert (caught.value.retry_after, caught.value.code) == (7.0, "20429")
    assert limiter.blocks == [7.0]
    # And the next message goes through (the SDK did not retry on its own)
    channel.send(sms())
    assert len(fake.requests) == 2


def test_rate_limit_without_retry_after_uses_the_default_delay(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], limiter: RecordingLimiter
) -> None:
    """A 429 without Retry-After still backs off, by one second."""
    # Given a 429 that names no delay
    channel = make_channel()
    fake.rate_limit_next(retry_after=None)
    # When a message is sent
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(sms())
    # Then it is transient with the default delay, shared via the limiter
    assert caught.value.retry_after == 1.0
    assert limiter.blocks == [1.0]


@pytest.mark.parametrize(
    ("scripted", "code"),
    [
        pytest.param(Scripted(status=500, body=None), "500", id="500-empty-body"),
        pytest.param(
            Scripted(
                status=503,
                body={"code": 20503, "message": "Service Unavailable", "status": 503},
                headers={"Retry-After": "4"},
            ),
            "20503",
            id="503-twilio-json-retry-after",
        ),
    ],
)
def test_server_errors_are_transient(
    fake: FakeTwilio,
    make_channel: Callable[..., TwilioSmsChannel],
    limiter: RecordingLimiter,
    scripted: Scripted,
    code: str,
) -> None:
    """HTTP 5xx is transient, with Twilio's code or, failing one, the HTTP status."""
    # Given Twilio failing the next request with a server error
    channel = make_channel()
    fake.script(FakeTwilio.MESSAGES, scripted)
    # When a message is sent
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(sms())
    # Then it is transient; a Retry-After, when given, is honoured
    assert code == caught.value.code
    retry_after = float(scripted.headers["Retry-After"]) if scripted.headers else None
    assert retry_after == caught.value.retry_after
    assert ([retry_after] if retry_after else []) == limiter.blocks


def test_slow_reply_beyond_the_timeout_is_transient(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """A reply slower than the timeout is transient, and flagged as possibly accepted."""
    # Given a channel with a 0.5 s timeout and Twilio answering 2 s late
    channel = make_channel(timeout=0.5)
    fake.slow_next(2.0)
    # When a message is sent
    started = time.monotonic()
    with pytest.raises(TransientDeliveryError) as caught:
        channel.send(sms())
    elapsed = time.monotonic() - started
    # Then the channel gave up after about the timeout, not the delay
    assert elapsed < 1.5
    assert "may have accepted" in caught.value.detail
    # And Twilio did take the message: the ambiguity is real
    assert len(fake.messages) == 1


def test_connection_refused_is_transient(limiter: RecordingLimiter) -> None:
    """A provider that cannot be reached is transient."""
    # Given a channel pointed at a port nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = TwilioSmsChannel(
        DEFAULT_ACCOUNT_SID,
        DEFAULT_AUTH_TOKEN,
        from_number=SENDER,
        base_url=f"http://127.0.0.1:{port}",
        limiter=limiter,
        timeout=1.0,
    )
    # When a message is sent / Then it is transient
    with pytest.raises(TransientDeliveryError, match="cannot reach Twilio"):
        channel.send(sms())
    channel.close()


def test_wrong_credentials_are_a_permanent_20003(fake: FakeTwilio) -> None:
    """The fake answers bad Basic auth like Twilio: 401, code 20003."""
    # Given a channel with the wrong auth token
    channel = TwilioSmsChannel(
        DEFAULT_ACCOUNT_SID, "not-the-token", from_number=SENDER, base_url=fake.url
    )
    # When a message is sent
    with pytest.raises(PermanentDeliveryError) as caught:
        channel.send(sms())
    channel.close()
    # Then Twilio's authentication error comes back and nothing was accepted
    assert caught.value.code == "20003"
    assert "HTTP 401" in caught.value.detail
    assert fake.messages == []


# --- segments --------------------------------------------------------------


def test_too_many_segments_is_refused_without_a_request(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], limiter: RecordingLimiter
) -> None:
    """A text over the segment limit is permanent, names its count, and never reaches Twilio."""
    # Given a channel allowing 10 segments and a text of 11 GSM-7 segments
    channel = make_channel()
    text = "a" * (153 * 10 + 1)
    # When it is sent
    with pytest.raises(PermanentDeliveryError, match="11 GSM-7 segments") as caught:
        channel.send(sms(text))
    # Then it is permanent (not a subclass), and no request nor limiter token was used
    assert PermanentDeliveryError is type(caught.value)
    assert (fake.requests, limiter.waits) == ([], 0)


def test_message_metadata_overrides_the_segment_limit(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """``metadata["max_sms_segments"]`` tightens or loosens the channel's limit."""
    # Given a channel allowing 10 segments
    channel = make_channel()
    # When a 2-segment text is limited to 1 / Then it is refused
    with pytest.raises(PermanentDeliveryError, match="2 UCS-2 segments"):
        channel.send(sms("ж" * 71, metadata={"max_sms_segments": 1}))
    # When an 11-segment text is allowed 12 / Then it is sent
    channel.send(sms("a" * (153 * 10 + 1), metadata={"max_sms_segments": 12}))
    assert [m["num_segments"] for m in fake.messages] == ["11"]


def test_empty_text_is_refused_without_a_request(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel]
) -> None:
    """A message without text is permanent and never reaches Twilio."""
    # Given a channel / When an empty text is sent / Then it is permanent, with no request
    with pytest.raises(PermanentDeliveryError, match="no text"):
        make_channel().send(sms(""))
    assert fake.requests == []


# --- configuration ---------------------------------------------------------


def test_twilio_environment_variables_are_ignored(
    fake: FakeTwilio,
    make_channel: Callable[..., TwilioSmsChannel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TWILIO_EDGE and TWILIO_REGION in the environment do not move the channel's requests."""
    # Given Twilio's SDK variables set in the environment
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "f" * 32)
    # When a channel built from explicit values sends
    make_channel().send(sms())
    # Then the request reached the configured base URL, for the configured account
    assert fake.invalid == []
    assert len(fake.messages) == 1


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        pytest.param(
            {"from_number": SENDER, "messaging_service_sid": SERVICE}, "exactly one", id="both"
        ),
        pytest.param({}, "exactly one", id="no-sender"),
        pytest.param({"from_number": SENDER, "base_url": "api.twilio.com"}, "http", id="scheme"),
        pytest.param({"from_number": SENDER, "timeout": 0}, "positive", id="zero-timeout"),
    ],
)
def test_invalid_configuration_is_refused(options: dict[str, Any], problem: str) -> None:
    """Exactly one sender, an http(s) base URL and a positive timeout are required."""
    # Given / When a channel is built with an invalid option / Then it is refused
    with pytest.raises(ValueError, match=problem):
        TwilioSmsChannel(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, **options)


def test_base_url_replaces_only_twilio_api_scheme_and_host() -> None:
    """api.twilio.com requests keep their path and query under base_url; others are untouched."""
    # Given a channel whose base URL has a path prefix
    channel = TwilioSmsChannel(
        DEFAULT_ACCOUNT_SID,
        DEFAULT_AUTH_TOKEN,
        from_number=SENDER,
        base_url="http://127.0.0.1:8080/twilio/",
    )
    api_url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?PageSize=5"
    other_url = "https://messaging.twilio.com/v1/Services"
    # When URLs are routed
    routed = [channel._http.route(api_url), channel._http.route(other_url)]
    channel.close()
    # Then only api.twilio.com moves, keeping path and query after the prefix
    assert routed == [
        "http://127.0.0.1:8080/twilio/2010-04-01/Accounts/AC1/Messages.json?PageSize=5",
        other_url,
    ]


# --- the fake's webhooks ---------------------------------------------------


@pytest.fixture(scope="module")
def _app_server() -> Iterator[FakeProvider]:
    def received(request: Request, path: dict[str, str]) -> Response:
        return Response(status=204)

    server = FakeProvider(None)
    server.route("POST", "/webhooks/twilio/{kind}", received)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app(_app_server: FakeProvider) -> FakeProvider:
    """A stand-in for our webhook endpoint: records what it receives, answers 204."""
    _app_server.requests.clear()
    return _app_server


def test_status_callback_is_signed_like_twilio(
    fake: FakeTwilio, make_channel: Callable[..., TwilioSmsChannel], app: FakeProvider
) -> None:
    """A status callback carries the message's fields and a valid X-Twilio-Signature."""
    # Given a message the fake accepted
    receipt = make_channel().send(sms())
    url = f"{app.url}/webhooks/twilio/status"
    # When the fake reports it undelivered
    response = fake.send_status_callback(
        url, receipt.provider_message_id, "undelivered", DEFAULT_AUTH_TOKEN, {"ErrorCode": "30007"}
    )
    # Then our endpoint got Twilio's form fields
    assert response.status_code == 204
    [request] = app.requests
    form = {key: values[0] for key, values in request.form().items()}
    assert {
        "MessageSid": receipt.provider_message_id,
        "MessageStatus": "undelivered",
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "To": MEMBER_PHONE,
        "From": SENDER,
        "ErrorCode": "30007",
    }.items() <= form.items()
    # And the signature verifies with the auth token, and not with another
    signature = request.headers["X-Twilio-Signature"]
    assert RequestValidator(DEFAULT_AUTH_TOKEN).validate(url, form, signature)
    assert not RequestValidator("another-token").validate(url, form, signature)


def test_inbound_sms_is_signed_like_twilio(fake: FakeTwilio, app: FakeProvider) -> None:
    """An inbound SMS webhook carries From, To, Body and SIDs, signed with the auth token."""
    # Given our inbound endpoint
    url = f"{app.url}/webhooks/twilio/inbound"
    # When a member texts STOP
    fake.send_inbound_sms(url, MEMBER_PHONE, "STOP", DEFAULT_AUTH_TOKEN)
    # Then the endpoint got the inbound message, validly signed
    [request] = app.requests
    form = {key: values[0] for key, values in request.form().items()}
    assert (
        form["From"],
        form["Body"],
        form["AccountSid"],
    ) == (MEMBER_PHONE, "STOP", DEFAULT_ACCOUNT_SID)
    assert form["MessageSid"].startswith("SM")
    assert form["To"]
    signature = request.headers["X-Twilio-Signature"]
    assert RequestValidator(DEFAULT_AUTH_TOKEN).validate(url, form, signature)
