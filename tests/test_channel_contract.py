"""The channel contract, the same for every provider: success, each error kind, timeouts, retries.

Each live channel runs through its real SDK against its fake provider (which
validates every request against the provider's official OpenAPI spec). A
harness per channel knows how to script its fake; the tests know only the
contract of ``channels.base.Channel`` and ``channels.errors``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from channels import (
    Channel,
    InvalidRecipient,
    Message,
    OutboxChannel,
    PermanentDeliveryError,
    Receipt,
    RecipientOptedOut,
    TransientDeliveryError,
    read_outbox,
)

from .support import RecordingLimiter

pytestmark = [pytest.mark.usefixtures("provider_specs")]

_ids = itertools.count(1)


@dataclass
class Harness:
    """How the contract drives one channel and its fake."""

    name: str
    make: Callable[[RecordingLimiter, float], Channel]
    message: Callable[[int], Message]
    accepted: Callable[[], int]
    invalid_requests: Callable[[], list[Any]]
    rate_limit: Callable[[float], None]
    server_error: Callable[[], None]
    slow: Callable[[float], None]
    invalid_recipient: Callable[[Message], Message]
    permanent: Callable[[], None]
    opted_out: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _message(channel: str, to: str, parts: dict[str, str], **metadata: Any) -> Message:
    n = next(_ids)
    return Message(
        delivery_id=n,
        dedupe_key=f"contract:{n}",
        member_id=n,
        channel=channel,
        to=to,
        parts=parts,
        category="marketing",
        campaign="contract",
        metadata={"unsubscribe_url": f"https://loyalty.example/unsubscribe/t{n}", **metadata},
    )


def _twilio() -> Iterator[Harness]:
    from channels.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
    from channels.twilio import TwilioSmsChannel

    with FakeTwilio() as fake:
        yield Harness(
            name="twilio",
            make=lambda limiter, timeout: TwilioSmsChannel(
                DEFAULT_ACCOUNT_SID,
                DEFAULT_AUTH_TOKEN,
                from_number="+15005550006",
                base_url=fake.url,
                limiter=limiter,
                timeout=timeout,
            ),
            message=lambda i: _message("sms", f"+1415555{i:04d}", {"text": f"Hello {i}"}),
            accepted=lambda: len(fake.messages),
            invalid_requests=lambda: fake.invalid,
            rate_limit=lambda s: fake.rate_limit_next(retry_after=s),
            server_error=lambda: fake.fail_next(20500, status=500),
            slow=fake.slow_next,
            invalid_recipient=lambda m: (fake.fail_next(21211), m)[1],
            permanent=lambda: fake.fail_next(30007),
            opted_out=lambda: fake.fail_next(21610),
        )


def _sendgrid() -> Iterator[Harness]:
    from channels.fakes.sendgrid import DEFAULT_API_KEY, FakeSendGrid
    from channels.sendgrid import SendGridEmailChannel

    with FakeSendGrid() as fake:
        yield Harness(
            name="sendgrid",
            make=lambda limiter, timeout: SendGridEmailChannel(
                DEFAULT_API_KEY,
                "rewards@loyalty.example",
                host=fake.url,
                limiter=limiter,
                timeout=timeout,
            ),
            message=lambda i: _message(
                "email",
                f"member{i}@example.com",
                {"subject": f"Hi {i}", "html": f"<p>Hi {i}</p>", "text": f"Hi {i}"},
            ),
            accepted=lambda: len(fake.mails),
            invalid_requests=lambda: fake.invalid,
            rate_limit=lambda s: fake.rate_limit_next(s),
            server_error=lambda: fake.fail_next(503),
            slow=fake.slow_next,
            invalid_recipient=lambda m: _replace(m, to="not-an-address@"),
            permanent=lambda: fake.fail_next(403),
        )


def _fcm(tmp: Path) -> Iterator[Harness]:
    from channels.fakes.fcm import FakeFcm
    from channels.fcm import FcmSender
    from channels.push import PushChannel

    with FakeFcm() as fake:
        credentials = fake.write_service_account(tmp / "service-account.json", "contract")

        def invalid(message: Message) -> Message:
            fake.unregister(message.to)
            return message

        yield Harness(
            name="fcm",
            make=lambda limiter, timeout: PushChannel(
                FcmSender(
                    credentials, "contract", base_url=fake.url, limiter=limiter, timeout=timeout
                ),
                None,
            ),
            message=lambda i: _message(
                "push",
                f"fcm-token-{next(_ids)}",
                {"title": f"Hi {i}", "body": "Double points"},
                push_kind="fcm",
            ),
            accepted=lambda: len(fake.messages),
            invalid_requests=lambda: fake.invalid,
            rate_limit=lambda s: fake.fail_next(429, "QUOTA_EXCEEDED", retry_after=s),
            server_error=lambda: fake.fail_next(503, "UNAVAILABLE"),
            slow=fake.slow_next,
            invalid_recipient=invalid,
            permanent=lambda: fake.fail_next(400, "THIRD_PARTY_AUTH_ERROR"),
        )


def _webpush() -> Iterator[Harness]:
    from channels.fakes.webpush import FakeWebPushService, make_vapid_keys
    from channels.push import PushChannel
    from channels.webpush import WebPushSender

    keys = make_vapid_keys()
    with FakeWebPushService() as fake:

        def message(i: int) -> Message:
            subscription = fake.subscribe(keys.public_key)
            return _message(
                "push",
                subscription["endpoint"],
                {"title": f"Hi {i}", "body": "Double points"},
                push_kind="webpush",
                webpush_keys=subscription["keys"],
            )

        def invalid(message: Message) -> Message:
            fake.expire(message.to)
            return message

        yield Harness(
            name="webpush",
            make=lambda limiter, timeout: PushChannel(
                None,
                WebPushSender(
                    keys.private_key,
                    "mailto:ops@loyalty.example",
                    limiter=limiter,
                    timeout=timeout,
                    allow_insecure=True,
                ),
            ),
            message=message,
            accepted=lambda: len(fake.received),
            invalid_requests=lambda: fake.invalid,
            rate_limit=fake.rate_limit_next,
            server_error=lambda: fake.fail_next(502),
            slow=fake.slow_next,
            invalid_recipient=invalid,
            permanent=lambda: fake.fail_next(413),
        )


def _replace(message: Message, **changes: Any) -> Message:
    from dataclasses import replace

    return replace(message, **changes)


HARNESSES = ["twilio", "sendgrid", "fcm", "webpush"]


@pytest.fixture(params=HARNESSES, scope="module")
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """Each live channel with its fake provider running."""
    if request.param == "twilio":
        yield from _twilio()
    elif request.param == "sendgrid":
        yield from _sendgrid()
    elif request.param == "fcm":
        yield from _fcm(tmp_path_factory.mktemp("fcm"))
    else:
        yield from _webpush()


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


def _send(harness: Harness, limiter: RecordingLimiter, *messages: Message, timeout: float = 5.0):
    channel = harness.make(limiter, timeout)
    try:
        return channel.send_batch(list(messages))
    finally:
        channel.close()


def test_success_returns_a_receipt_per_message(harness, limiter):
    """Accepted messages each get a receipt; the provider saw valid requests only."""
    before = harness.accepted()
    messages = [harness.message(i) for i in range(3)]
    outcomes = _send(harness, limiter, *messages)
    assert [type(o) for o in outcomes] == [Receipt] * 3
    assert all(o.provider_message_id for o in outcomes)
    assert harness.accepted() - before == 3
    assert harness.invalid_requests() == []
    assert limiter.tokens >= 1


def test_rate_limit_is_transient_with_retry_after_and_blocks_the_bucket(harness, limiter):
    """A 429 says when to retry, and every worker's bucket is blocked that long."""
    harness.rate_limit(7)
    [outcome] = _send(harness, limiter, harness.message(1))
    assert isinstance(outcome, TransientDeliveryError)
    assert outcome.retry_after is not None
    assert 5 <= outcome.retry_after <= 8
    assert not outcome.ambiguous
    assert limiter.blocks
    assert 5 <= limiter.blocks[0] <= 8


def test_server_error_is_transient_and_not_ambiguous(harness, limiter):
    """A 5xx means the provider did not take it: retry later, safely."""
    harness.server_error()
    [outcome] = _send(harness, limiter, harness.message(1))
    assert isinstance(outcome, TransientDeliveryError)
    assert not outcome.ambiguous


def test_timeout_is_transient_and_ambiguous(harness, limiter):
    """No answer in time: the provider may have it, so the outcome says it is ambiguous."""
    harness.slow(1.5)
    [outcome] = _send(harness, limiter, harness.message(1), timeout=0.3)
    assert isinstance(outcome, TransientDeliveryError)
    assert outcome.ambiguous


def test_invalid_recipient_is_its_own_kind(harness, limiter):
    """An address the provider rejects is InvalidRecipient, a permanent error."""
    [outcome] = _send(harness, limiter, harness.invalid_recipient(harness.message(1)))
    assert isinstance(outcome, InvalidRecipient)
    assert isinstance(outcome, PermanentDeliveryError)


def test_other_refusals_are_permanent(harness, limiter):
    """A refusal that would fail again is permanent (and neither invalid nor opted out)."""
    harness.permanent()
    [outcome] = _send(harness, limiter, harness.message(1))
    assert isinstance(outcome, PermanentDeliveryError)
    assert not isinstance(outcome, InvalidRecipient | RecipientOptedOut)


@pytest.mark.parametrize("harness", ["twilio"], indirect=True)
def test_opted_out_where_the_provider_reports_it(harness, limiter):
    """A provider that knows of an opt-out on send (Twilio) says so with RecipientOptedOut.

    SendGrid, FCM and Web Push report opt-outs by webhook or not at all.
    """
    assert harness.opted_out is not None
    harness.opted_out()
    [outcome] = _send(harness, limiter, harness.message(1))
    assert isinstance(outcome, RecipientOptedOut)


def test_a_retry_after_a_transient_error_succeeds_once(harness, limiter):
    """The same message sent again after a 5xx is accepted exactly once."""
    message = harness.message(1)
    harness.server_error()
    before = harness.accepted()
    [first] = _send(harness, limiter, message)
    [second] = _send(harness, limiter, message)
    assert isinstance(first, TransientDeliveryError)
    assert isinstance(second, Receipt)
    assert harness.accepted() - before == 1


def test_the_outbox_writes_one_line_per_message(tmp_path: Path):
    """Outbox mode: each message becomes one JSON line, in a file only its owner can read."""
    channel = OutboxChannel("sms", tmp_path)
    messages = [_message("sms", f"+1415555{i:04d}", {"text": f"Hi {i}"}) for i in range(3)]
    outcomes = channel.send_batch(messages)
    channel.close()
    assert [type(o) for o in outcomes] == [Receipt] * 3
    lines = read_outbox(tmp_path, "sms")
    assert [line["delivery_id"] for line in lines] == [m.delivery_id for m in messages]
    assert oct((tmp_path / "sms.jsonl").stat().st_mode & 0o777) == "0o600"
