"""Twilio SMS: one Programmable Messaging request per message, through the real SDK.

:class:`TwilioSmsChannel` counts a message's segments before anything leaves
(a text longer than the campaign allows is refused without a request), takes a
token from the rate limiter (a batch takes its tokens with one call), then
creates the Message resource with ``twilio.rest.Client``. Twilio's errors are
translated in one table (:data:`TWILIO_ERROR_KINDS`) and one helper
(:func:`_translate`)::

    HTTP 429, code 20429      -> TransientDeliveryError(retry_after), limiter blocked
    HTTP 5xx                  -> TransientDeliveryError (retry_after if Retry-After)
    connection error, timeout -> TransientDeliveryError
    21610                     -> RecipientOptedOut
    21211, 21614              -> InvalidRecipient
    21611                     -> TransientDeliveryError (the sender's queue is full)
    any other code            -> PermanentDeliveryError

The SDK has no base-URL setting (DESIGN.md, twilio traps): its HTTP client is
:class:`channels.twilio_http.TwilioTransport`, which swaps the scheme and host
of ``https://api.twilio.com`` URLs for ``base_url``, sets the timeout on every
request and remembers each thread's last response headers, because the SDK's
exceptions drop them and Retry-After lives there. It sends through urllib3
rather than ``requests`` (0.3-0.4 ms of CPU less per SMS) but raises
requests' exception types, which :func:`_translate` reads. The SDK does not
retry 429s and the transport retries nothing, so a request is sent at most
once per message.

A read timeout, an answer cut off (the connection dropped after the request
went out, a truncated body) or an unreadable 2xx body is ambiguous: Twilio
may have accepted the message. It is reported as transient (the closed error set has no
"ambiguous" kind); its detail says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client

from .base import BatchChannel, Message, Outcome, Receipt
from .errors import (
    DeliveryError,
    InvalidRecipient,
    PermanentDeliveryError,
    RecipientOptedOut,
    TransientDeliveryError,
)
from .http import is_ambiguous, retry_after_seconds
from .ratelimit import NoLimit, RateLimiter
from .sms_segments import count_segments
from .twilio_http import TWILIO_API_URL, TwilioTransport

__all__ = [
    "DEFAULT_MAX_SEGMENTS",
    "DEFAULT_RETRY_AFTER",
    "DEFAULT_TIMEOUT",
    "TWILIO_API_URL",
    "TWILIO_ERROR_KINDS",
    "TwilioSmsChannel",
]

#: Seconds to wait for Twilio to connect and, separately, to answer.
DEFAULT_TIMEOUT = 10.0
#: The most segments one SMS may cost unless the campaign says otherwise.
DEFAULT_MAX_SEGMENTS = 10
#: Seconds to back off after a 429 that carries no Retry-After header.
DEFAULT_RETRY_AFTER = 1.0

#: Twilio error codes (https://www.twilio.com/docs/api/errors) and what they mean
#: to us. A code not listed is permanent; HTTP 429 and 5xx are transient whatever
#: their code.
TWILIO_ERROR_KINDS: Mapping[int, type[DeliveryError]] = MappingProxyType(
    {
        21610: RecipientOptedOut,  # the recipient replied STOP to this sender
        21211: InvalidRecipient,  # invalid 'To' phone number
        21614: InvalidRecipient,  # 'To' is not a valid mobile number
        20429: TransientDeliveryError,  # too many requests
        21611: TransientDeliveryError,  # the sender's queue of unsent messages is full
    }
)

# Network failures that ``requests`` raises through the SDK: connection refused
# or reset, DNS, TLS and proxy errors, connect and read timeouts, a body cut off
# mid-read. Other ``RequestException``s (an invalid URL) are configuration errors.
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

# ``ClientBase`` falls back to ``os.environ`` when ``environment`` is falsy and
# then reads TWILIO_EDGE and TWILIO_REGION from it, which would rewrite the host
# before our HTTP client sees it. A non-empty mapping without those keys keeps
# the channel's configuration explicit (adapters never read the environment).
_NO_ENVIRONMENT: Mapping[str, str] = MappingProxyType({"LOYALCAST": "explicit configuration"})

_NO_LIMIT = NoLimit()
# The SDK prepends "Unable to create record: " (fetch, update...) to Twilio's message.
_SDK_PREFIX = re.compile(r"^Unable to \w+ record: ")


class TwilioSmsChannel(BatchChannel):
    """SMS through Twilio's Messaging API: a receipt per accepted message, or a delivery error."""

    name = "sms"
    live: ClassVar[bool] = True
    # A chunk is what the deliver worker claims at once (``sending`` with one
    # lease, workers/delivery.py); Twilio has no batch API, so a chunk is sent one
    # request per message, ``concurrency`` at a time. With the default 8
    # (LOYALCAST_SEND_CONCURRENCY) 20 is three rounds: the worst case (limiter
    # wait of 2 s, then connect and read timeouts of 10 s each) is 66 s, well
    # under the default 300 s lease. It bounds what a killed worker leaves
    # ``unknown`` to 20 messages, while the claim and record UPDATEs cost
    # little next to 20 HTTP requests.
    max_batch: ClassVar[int] = 20

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = TWILIO_API_URL,
        status_callback: str | None = None,
        limiter: RateLimiter = _NO_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
        concurrency: int = 1,
    ) -> None:
        """Build the channel and its SDK client; nothing is sent yet.

        Args:
            account_sid: The account SID (``AC...``); also the Basic auth user.
            auth_token: The account's auth token.
            from_number: The sender number in E.164; exactly one of this and
                ``messaging_service_sid``.
            messaging_service_sid: A Messaging Service (``MG...``) that picks the sender.
            base_url: Scheme and host (and optional path) replacing
                ``https://api.twilio.com``, e.g. a fake provider's URL.
            status_callback: Where Twilio posts status changes of each message;
                each message's URL adds ``delivery=<its delivery id>`` to the
                query, so a report finds its delivery before the Message SID
                is recorded (Twilio signs the URL with its query).
            limiter: Called before each request; told about Retry-After.
            timeout: Seconds for connecting and, separately, for the answer.
            max_segments: The most segments a message may cost, unless its
                ``metadata["max_sms_segments"]`` says otherwise.
            concurrency: Requests in flight at once from this channel object
                (shared by every thread of the process that uses it).

        Raises:
            ValueError: A credential is empty, both or neither sender is given,
                ``base_url`` is not an http(s) URL, or a limit is not positive.
        """
        if not account_sid or not auth_token:
            raise ValueError("account_sid and auth_token are required")
        if bool(from_number) == bool(messaging_service_sid):
            raise ValueError("give exactly one of from_number and messaging_service_sid")
        target = urlsplit(base_url)
        if target.scheme not in ("http", "https") or not target.netloc:
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        if timeout <= 0 or max_segments < 1 or concurrency < 1:
            raise ValueError("timeout, max_segments and concurrency must be positive")
        self.account_sid = account_sid
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url
        self.status_callback = status_callback
        self.limiter = limiter
        self.timeout = timeout
        self.max_segments = max_segments
        self.concurrency = concurrency
        self._http = TwilioTransport(base_url, timeout, pool_size=concurrency)
        self._client = Client(
            account_sid,
            auth_token,
            http_client=self._http,
            environment=_NO_ENVIRONMENT,
            user_agent_extensions=["loyalcast"],
        )

    def send(self, message: Message) -> Receipt:
        """Send ``message.parts["text"]`` to ``message.to``.

        Args:
            message: A rendered SMS; ``to`` is E.164.

        Returns:
            A receipt holding the Message SID.

        Raises:
            PermanentDeliveryError: No text, more segments than allowed (no
                request is made), or a Twilio error that will not go away.
            InvalidRecipient: Twilio says the number is not valid (21211, 21614).
            RecipientOptedOut: The recipient opted out of this sender (21610).
            TransientDeliveryError: Rate limited (the limiter is blocked for
                ``retry_after``), Twilio unavailable, a network error or a timeout.
        """
        params = self._params(message)
        self.limiter.wait()
        return self._create(params)

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """Send each message (``concurrency`` at a time); outcomes in the messages' order.

        Rate-limit tokens are taken for the whole batch with one limiter call
        (:meth:`RateLimiter.acquire`) rather than one per message; a partial
        grant sends that many, then asks again for the rest. A message the
        limiter has no token for soon enough fails transient, as :meth:`send`
        would. Messages refused before any request (no text, too many
        segments) take no token. When a request in a group is rate limited
        (HTTP 429), the group's requests not yet started are not sent: they
        fail transient with the same ``retry_after``.
        """
        outcomes: list[Outcome | None] = [None] * len(messages)
        ready: list[tuple[int, dict[str, str]]] = []
        for index, message in enumerate(messages):
            try:
                ready.append((index, self._params(message)))
            except DeliveryError as exc:
                outcomes[index] = exc
        while ready:
            try:
                granted = self.limiter.acquire(len(ready))
            except TransientDeliveryError as exc:
                for index, _ in ready:
                    outcomes[index] = exc
                break
            group, ready = ready[:granted], ready[granted:]
            for (index, _), outcome in zip(
                group, self._send_group([p for _, p in group]), strict=True
            ):
                outcomes[index] = outcome
        done = [outcome for outcome in outcomes if outcome is not None]
        if len(done) != len(messages):
            raise RuntimeError("a message of the batch got no outcome")
        return done

    def _send_group(self, group: list[dict[str, str]]) -> list[Outcome]:
        """Create each message of ``group`` (its tokens are taken), stopping at a rate limit."""
        halted: list[TransientDeliveryError] = []

        def attempt(params: dict[str, str]) -> Outcome:
            if halted:
                return TransientDeliveryError(
                    f"not sent: Twilio rate limited this batch ({halted[0].detail})",
                    retry_after=halted[0].retry_after,
                    code=halted[0].code,
                )
            try:
                return self._create(params)
            except DeliveryError as exc:
                if isinstance(exc, TransientDeliveryError) and exc.retry_after is not None:
                    halted.append(exc)
                return exc

        return self.in_pool(attempt, group)

    def _params(self, message: Message) -> dict[str, str]:
        """The SDK's ``messages.create`` arguments for ``message``, or why it cannot be sent."""
        text = message.parts.get("text", "")
        if not text:
            raise PermanentDeliveryError("the SMS has no text part")
        info = count_segments(text)
        allowed = int(message.metadata.get("max_sms_segments", self.max_segments))
        if info.segments > allowed:
            raise PermanentDeliveryError(
                f"the SMS needs {info.segments} {info.encoding} segments "
                f"({info.units} units); at most {allowed} allowed"
            )
        params: dict[str, str] = {"to": message.to, "body": text}
        if self.from_number:
            params["from_"] = self.from_number
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback:
            params["status_callback"] = _with_delivery(self.status_callback, message.delivery_id)
        return params

    def _create(self, params: dict[str, str]) -> Receipt:
        """One Messages request, its token taken; a Retry-After blocks the limiter."""
        try:
            created = self._client.messages.create(**params)
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            error = _translate(exc, self._http.last_headers(), timeout=self.timeout)
            if isinstance(error, TransientDeliveryError) and error.retry_after is not None:
                self.limiter.block(error.retry_after)
            raise error from exc
        sid = created.sid
        if not sid:
            raise TransientDeliveryError("Twilio answered without a Message SID (ambiguous)")
        return Receipt(provider_message_id=str(sid), accepted_at=datetime.now(UTC))

    def close(self) -> None:
        """Stop the send pool and close the pooled HTTP connections."""
        super().close()
        self._http.close()


def _with_delivery(url: str, delivery_id: int) -> str:
    """``url`` with ``delivery=<delivery_id>`` added to its query."""
    parts = urlsplit(url)
    added = f"delivery={int(delivery_id)}"
    return urlunsplit(parts._replace(query=f"{parts.query}&{added}" if parts.query else added))


def _translate(
    exc: Exception, headers: Mapping[str, str] | None = None, *, timeout: float | None = None
) -> DeliveryError:
    """Our delivery error for an exception from a Twilio request.

    Args:
        exc: What the SDK raised or let through from ``requests``.
        headers: The response's headers, if a response came (for Retry-After).
        timeout: The request timeout, named in the detail of a timeout.

    Returns:
        The error to raise, keeping Twilio's code and message.
    """
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(exc.status)
        code = int(exc.code) if exc.code is not None else status
        detail = f"Twilio HTTP {status}: {_twilio_text(exc)}"
        kind = TWILIO_ERROR_KINDS.get(code, PermanentDeliveryError)
        if status == 429 or status >= 500:
            kind = TransientDeliveryError
        if kind is TransientDeliveryError:
            retry_after = retry_after_seconds((headers or {}).get("Retry-After"))
            if retry_after is None and (status == 429 or code == 20429):
                retry_after = DEFAULT_RETRY_AFTER
            return TransientDeliveryError(detail, retry_after=retry_after, code=str(code))
        return kind(detail, code=str(code))
    if isinstance(exc, requests.ReadTimeout):
        return TransientDeliveryError(
            f"Twilio did not answer within {timeout} s; it may have accepted the message",
            ambiguous=True,
        )
    if isinstance(exc, _NETWORK_ERRORS):
        if is_ambiguous(exc):  # the request went out; the answer was cut off
            return TransientDeliveryError(
                f"Twilio's answer was cut off ({exc}); it may have accepted the message",
                ambiguous=True,
            )
        return TransientDeliveryError(f"cannot reach Twilio: {exc}")
    if isinstance(exc, json.JSONDecodeError):
        return TransientDeliveryError(
            f"Twilio answered with a body that is not JSON ({exc}); "
            "it may have accepted the message",
            ambiguous=True,
        )
    return PermanentDeliveryError(f"Twilio request failed: {type(exc).__name__}: {exc}")


def _twilio_text(exc: Any) -> str:
    """Twilio's own message from a legacy or an RFC 9457 error, without the SDK's prefix."""
    if isinstance(exc, TwilioServiceException):
        return f"{exc.title}: {exc.detail}" if exc.detail else str(exc.title)
    return _SDK_PREFIX.sub("", str(exc.msg)) or str(exc.msg)
