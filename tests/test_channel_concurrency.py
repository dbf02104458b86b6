"""BatchChannel's send pool: ``concurrency`` requests in flight, outcomes in message order."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import structlog

from channels import Message, Receipt
from channels.base import BatchChannel
from channels.errors import InvalidRecipient
from channels.twilio import TwilioSmsChannel

NOW = datetime(2026, 11, 23, tzinfo=UTC)


class Gate(BatchChannel):
    """Each send waits until ``width`` sends are in flight together (or times out)."""

    name = "sms"

    def __init__(self, concurrency: int, width: int) -> None:
        self.concurrency = concurrency
        self.barrier = threading.Barrier(width, timeout=5)
        self.threads: set[str] = set()

    def send(self, message: Message) -> Receipt:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()
        if message.to == "bad":
            raise InvalidRecipient("no such number")
        return Receipt(provider_message_id=f"id-{message.delivery_id}", accepted_at=NOW)


def sms(delivery_id: int, to: str) -> Message:
    return Message(
        delivery_id=delivery_id,
        dedupe_key=f"k{delivery_id}",
        member_id=delivery_id,
        channel="sms",
        to=to,
        parts={"text": "hi"},
        category="service",
        campaign="test",
    )


def test_sends_run_concurrency_at_a_time_and_outcomes_keep_order() -> None:
    """Eight messages, four at a time: each round of four meets at the barrier together."""
    channel = Gate(concurrency=4, width=4)
    messages = [sms(i, "bad" if i == 5 else f"+1555000{i:04}") for i in range(8)]
    try:
        outcomes = channel.send_batch(messages)
    finally:
        channel.close()
    assert [o.provider_message_id for o in outcomes if isinstance(o, Receipt)] == [
        f"id-{i}" for i in range(8) if i != 5
    ]
    assert isinstance(outcomes[5], InvalidRecipient)
    assert len(channel.threads) == 4
    assert all(name.startswith("send-sms") for name in channel.threads)


def test_without_concurrency_sends_go_one_after_the_other_on_the_callers_thread() -> None:
    """concurrency=1 is the plain loop: a barrier of two would never open."""
    channel = Gate(concurrency=1, width=1)
    outcomes = channel.send_batch([sms(1, "+15550001"), sms(2, "+15550002")])
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert channel.threads == {threading.current_thread().name}
    assert channel._pool is None


class Recorder(BatchChannel):
    """Remembers the log context each send saw, and binds one of its own."""

    name = "sms"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.seen: dict[int, dict[str, object]] = {}

    def send(self, message: Message) -> Receipt:
        self.seen[message.delivery_id] = dict(structlog.contextvars.get_contextvars())
        structlog.contextvars.bind_contextvars(leaked=message.delivery_id)
        return Receipt(provider_message_id=f"id-{message.delivery_id}", accepted_at=NOW)


def test_pool_threads_log_with_the_calling_jobs_context() -> None:
    """A pool thread's log lines carry the job's bound context, and bind nothing back."""
    channel = Recorder(concurrency=4)
    structlog.contextvars.bind_contextvars(actor="deliver", message_id="m-1")
    try:
        channel.send_batch([sms(i, f"+1555000{i:04}") for i in range(12)])
        structlog.contextvars.bind_contextvars(message_id="m-2")
        channel.send_batch([sms(i, f"+1555000{i:04}") for i in range(12, 20)])
        after = structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()
        channel.close()
    assert [channel.seen[i] for i in range(12)] == [{"actor": "deliver", "message_id": "m-1"}] * 12
    assert [channel.seen[i] for i in range(12, 20)] == [
        {"actor": "deliver", "message_id": "m-2"}
    ] * 8
    assert after == {"actor": "deliver", "message_id": "m-2"}


def test_twilio_refuses_a_concurrency_below_one() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        TwilioSmsChannel("AC1", "token", from_number="+15550001", concurrency=0)


def test_twilio_reads_the_proxy_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY and a CA bundle are honoured, read when the channel is built, not per request."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    channel = TwilioSmsChannel("AC1", "token", from_number="+15550001")
    assert channel._http.proxy == {"https": "http://proxy.example:3128"}
    assert channel._http.ca_bundle is None
    monkeypatch.setenv("NO_PROXY", "api.twilio.com")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corporate.pem")
    again = TwilioSmsChannel("AC1", "token", from_number="+15550001")
    assert again._http.proxy == {}
    assert again._http.ca_bundle == "/etc/ssl/corporate.pem"
