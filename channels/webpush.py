"""Web Push (RFC 8030, 8291, 8292) through pywebpush: :class:`WebPushSender`.

Each message is a JSON payload ``{"title", "body", **data}`` encrypted with
``aes128gcm`` to the subscription's keys and posted to its endpoint with a
TTL and a VAPID ``Authorization: vapid t=<JWT>, k=<public key>`` header.

pywebpush's :class:`~pywebpush.WebPusher` does the encryption and the POST;
its one-call ``webpush()`` is not used because it re-parses the VAPID key on
every call, opens a new connection every time, and writes ``aud`` and ``exp``
into the caller's claims dict, so a reused dict keeps the first endpoint's
audience. Here the key is parsed once, a session per thread keeps
connections to each push service, and the signed VAPID header is cached per
push-service origin until it is an hour from expiry.

Endpoints come from members' browsers, so an endpoint that is not ``https``
is refused as an invalid recipient (a worker never posts to arbitrary
internal URLs); ``allow_insecure=True`` is for local fakes only.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import http_ece
import requests
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException
from requests.adapters import HTTPAdapter

from .base import Receipt
from .errors import (
    DeliveryError,
    InvalidRecipient,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from .http import retry_after_seconds, transport_error
from .ratelimit import NoLimit, RateLimiter

__all__ = ["DEFAULT_TTL", "WEBPUSH_ERRORS", "WebPushSender"]

DEFAULT_TIMEOUT = 10.0
#: How long a push service keeps an undelivered message (seconds). A loyalty
#: message older than a day is stale; expiry reminders go out days ahead.
DEFAULT_TTL = 24 * 3600
#: VAPID JWT lifetime; RFC 8292 allows at most 24 hours.
VAPID_LIFETIME = 12 * 3600
#: A cached VAPID header is signed again when less than this is left.
VAPID_RENEW_BEFORE = 3600
#: Every worker pauses this long after a 429 without Retry-After.
DEFAULT_RATE_BACKOFF = 60.0
_NO_LIMIT = NoLimit()

#: HTTP statuses of push services to what they mean for a delivery; other
#: 5xx are transient and other 4xx permanent.
WEBPUSH_ERRORS: dict[int, tuple[type[DeliveryError], str]] = {
    400: (PermanentDeliveryError, "the push service refused the request as malformed"),
    401: (PermanentDeliveryError, "the push service wants VAPID authentication"),
    403: (
        PermanentDeliveryError,
        "the push service refused the VAPID key or its JWT (check VAPID_PRIVATE_KEY: a "
        "subscription only accepts the key it was created with)",
    ),
    404: (InvalidRecipient, "the push subscription does not exist"),
    410: (InvalidRecipient, "the push subscription expired or was unsubscribed"),
    413: (PermanentDeliveryError, "the payload is too large for the push service"),
    429: (TransientDeliveryError, "the push service is rate limiting us"),
}


def _load_vapid(private_key: str) -> Any:
    """A py_vapid key from a base64url raw or DER key, or a PEM block."""
    try:
        if "-----BEGIN" in private_key:
            return Vapid.from_pem(private_key.strip().encode())
        return Vapid.from_string(private_key.strip())
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"VAPID_PRIVATE_KEY is not a P-256 private key: {exc}") from exc


class WebPushSender:
    """Sends encrypted Web Push messages to browser subscriptions, signed with VAPID.

    Args:
        vapid_private_key: the application server's P-256 key (``VAPID_PRIVATE_KEY``):
            base64url raw or DER, or PEM.
        vapid_subject: the contact push services may use (``VAPID_SUBJECT``):
            a ``mailto:`` or ``https:`` URL.
        limiter: the provider's shared rate limit; blocked for every worker on a 429.
        timeout: seconds for each HTTP request.
        ttl: seconds a push service keeps the message for an offline browser.
        allow_insecure: accept ``http`` endpoints (local fakes only).

    Raises:
        ValueError: the key or the subject is malformed.
    """

    provider = "webpush"
    #: The largest plaintext that fits the 4096 octets every push service must take
    #: (RFC 8030 section 7.2) after aes128gcm's 86-octet header, delimiter and tag.
    max_payload_bytes: ClassVar[int] = 3993

    def __init__(
        self,
        vapid_private_key: str,
        vapid_subject: str,
        *,
        limiter: RateLimiter = _NO_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        ttl: int = DEFAULT_TTL,
        allow_insecure: bool = False,
    ) -> None:
        self._vapid = _load_vapid(vapid_private_key)
        try:  # py_vapid checks the subject only when signing: find out now, not per message
            self._vapid.sign({"sub": vapid_subject, "aud": "https://push.invalid", "exp": 1})
        except VapidException as exc:
            raise ValueError(
                f"VAPID_SUBJECT must be a mailto: address or an https: URL, not {vapid_subject!r}"
            ) from exc
        self.subject = vapid_subject
        self.limiter = limiter
        self.timeout = timeout
        self.ttl = ttl
        self.allow_insecure = allow_insecure
        self._headers: dict[str, tuple[dict[str, str], float]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        """This thread's session (a requests session is not meant to be shared by threads)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # No retries below us: a retried POST can deliver twice; the worker decides.
            session.mount("https://", HTTPAdapter(max_retries=0))
            session.mount("http://", HTTPAdapter(max_retries=0))
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    @property
    def application_server_key(self) -> str:
        """The public key browsers pass to ``pushManager.subscribe`` (base64url)."""
        raw = self._vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _vapid_headers(self, origin: str) -> dict[str, str]:
        now = time.time()
        with self._lock:
            cached = self._headers.get(origin)
            if cached is None or cached[1] - now < VAPID_RENEW_BEFORE:
                exp = int(now) + VAPID_LIFETIME
                try:
                    signed = self._vapid.sign({"sub": self.subject, "aud": origin, "exp": exp})
                except VapidException as exc:
                    raise InvalidRecipient(f"no VAPID audience fits {origin!r}: {exc}") from exc
                cached = (dict(signed), float(exp))
                self._headers[origin] = cached
            return dict(cached[0])

    def _origin(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        schemes = ("https", "http") if self.allow_insecure else ("https",)
        if parts.scheme not in schemes or not parts.hostname or "@" in parts.netloc:
            raise InvalidRecipient(f"a push endpoint must be an https URL, not {endpoint!r}")
        return f"{parts.scheme}://{parts.netloc}"

    def send(
        self,
        endpoint: str,
        keys: Mapping[str, str],
        *,
        title: str,
        body: str,
        data: Mapping[str, str],
    ) -> Receipt:
        """Encrypt ``{"title", "body", **data}`` to one subscription and post it.

        Args:
            endpoint: the subscription's push-service URL.
            keys: the subscription's ``p256dh`` and ``auth`` keys (base64url).
            title: the notification title.
            body: the notification text.
            data: more string key/values for the service worker.

        Returns:
            A receipt whose id is the push service's ``Location`` (or a generated id).

        Raises:
            InvalidRecipient: the subscription is gone, malformed, or not https (revoke it).
            TransientDeliveryError: 429, a 5xx, a timeout or a connection error.
            PermanentDeliveryError: the request, the VAPID key or the payload size was refused.
        """
        origin = self._origin(endpoint)
        payload = json.dumps(
            {"title": title, "body": body, **data}, ensure_ascii=False, separators=(",", ":")
        ).encode()
        if len(payload) > self.max_payload_bytes:
            raise PermanentDeliveryError(
                f"push payload is {len(payload)} bytes; at most {self.max_payload_bytes} fit",
                code="payload_too_large",
            )
        subscription = {"endpoint": endpoint, "keys": dict(keys)}
        try:
            pusher = WebPusher(subscription, requests_session=self._session())
        except (WebPushException, ValueError, TypeError, binascii.Error) as exc:
            raise InvalidRecipient(f"the push subscription's keys are unusable: {exc}") from exc
        headers = self._vapid_headers(origin)
        self.limiter.wait()
        try:
            response = pusher.send(
                payload, headers, ttl=self.ttl, content_encoding="aes128gcm", timeout=self.timeout
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise InvalidRecipient(f"the push endpoint is not a usable URL: {exc}") from exc
        except requests.RequestException as exc:
            raise transport_error(exc, origin, self.timeout) from exc
        except (WebPushException, http_ece.ECEException, ValueError) as exc:
            # Encryption failed: p256dh is not a P-256 point or auth is malformed.
            raise InvalidRecipient(f"the push subscription's keys are unusable: {exc}") from exc
        if response.status_code in (200, 201, 202):
            location = response.headers.get("Location")
            return Receipt(
                provider_message_id=location or f"webpush-{uuid.uuid4().hex}",
                accepted_at=datetime.now(UTC),
            )
        raise _translate(response, self.limiter, origin)

    def close(self) -> None:
        """Close every thread's HTTP session."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def _translate(response: requests.Response, limiter: RateLimiter, origin: str) -> DeliveryError:
    """The one place push services' answers become delivery errors."""
    status = response.status_code
    kind, meaning = WEBPUSH_ERRORS.get(
        status,
        (TransientDeliveryError, f"{origin} had a server error")
        if status >= 500
        else (PermanentDeliveryError, f"{origin} answered {status}"),
    )
    text = (response.text or "").strip()[:300]
    detail = f"{meaning}: {status} {text}" if text else f"{meaning}: {status}"
    if kind is TransientDeliveryError:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            wait = DEFAULT_RATE_BACKOFF if wait is None else wait
            limiter.block(wait)
        return TransientDeliveryError(detail, retry_after=wait, code=str(status))
    return kind(detail, code=str(status))
