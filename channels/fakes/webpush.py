"""A fake Web Push service, and a browser that decrypts what it receives.

No official OpenAPI spec exists for Web Push, so the fake checks each push
by hand against the RFCs, before any scripted answer:

- RFC 8030: a ``TTL`` header (a non-negative integer), at most 4096 octets of body;
- RFC 8291: ``Content-Encoding: aes128gcm`` and a body that decrypts with the
  subscription's keys (the fake plays the browser: a real push service
  cannot read the payload, but a browser would drop one it cannot decrypt);
- RFC 8292: ``Authorization: vapid t=<JWT>, k=<public key>`` whose ES256 JWT
  verifies with ``k``, with ``aud`` the endpoint's origin, ``exp`` in the
  future and at most 24 hours away, a ``sub`` contact, and ``k`` equal to the
  application server key the subscription was made with, if any.

A push that breaks them is answered 400, 401 (no VAPID), 403 (VAPID refused)
or 413 (too large) and recorded with ``valid=False``. A valid push to a live
subscription is decrypted, its JSON kept in ``received``, and answered
``201 Created`` with a ``Location``. Every request is checked: the spec
sampling of ``validate_every`` does not apply here.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid
from werkzeug.wrappers import Request, Response

from .server import FakeProvider, Scripted, json_response

__all__ = ["FakeWebPushService", "ReceivedPush", "VapidKeys", "make_vapid_keys"]

#: RFC 8030 section 7.2: the payload size every push service must accept.
MAX_BODY = 4096
#: RFC 8292 section 2: ``exp`` no further than 24 hours ahead.
MAX_VAPID_LIFETIME = 24 * 3600
PUSH_ROUTE = "/push/{sub_id}"
_REJECTED = "loyalcast.fake.webpush.rejected"
_PLAINTEXT = "loyalcast.fake.webpush.plaintext"


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@dataclass(frozen=True)
class VapidKeys:
    """An application server's VAPID key pair, in the forms deployments use."""

    private_key: str
    """base64url of the raw 32-octet private key (``VAPID_PRIVATE_KEY``)."""
    public_key: str
    """base64url of the uncompressed public point (the browser's ``applicationServerKey``)."""
    private_pem: str


def make_vapid_keys() -> VapidKeys:
    """A fresh VAPID key pair made with py_vapid."""
    vapid = Vapid()
    vapid.generate_keys()
    key: ec.EllipticCurvePrivateKey = vapid.private_key
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    return VapidKeys(
        private_key=_b64url_encode(raw),
        public_key=_b64url_encode(_public_raw(key)),
        private_pem=vapid.private_pem().decode(),
    )


@dataclass(frozen=True)
class ReceivedPush:
    """One push the browser decrypted."""

    endpoint: str
    payload: Any
    """The decrypted body, parsed as JSON (or the text when it is not JSON)."""
    ttl: int
    urgency: str | None
    location: str


@dataclass
class _Subscription:
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None
    expired: bool = False


class _Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class FakeWebPushService(FakeProvider):
    """A push service on 127.0.0.1 with subscriptions whose payloads it decrypts."""

    name = "webpush"

    def __init__(self) -> None:
        super().__init__(None)
        self.received: list[ReceivedPush] = []
        self._subscriptions: dict[str, _Subscription] = {}
        self._delays: deque[float] = deque()
        self._ids = itertools.count(1)
        self._state = threading.Lock()
        self.route("POST", PUSH_ROUTE, self._push, name="push")

    # --- test set-up -----------------------------------------------------------

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A new subscription, as ``PushSubscription.toJSON()`` gives it to a web page.

        Args:
            application_server_key: the VAPID public key the page subscribed
                with; pushes signed with another key are refused (403).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        sub_id = secrets.token_urlsafe(16)
        with self._state:
            self._subscriptions[sub_id] = _Subscription(key, auth, application_server_key)
        return {
            "endpoint": f"{self.url}/push/{sub_id}",
            "keys": {"p256dh": _b64url_encode(_public_raw(key)), "auth": _b64url_encode(auth)},
        }

    def expire(self, endpoint: str) -> None:
        """Later pushes to ``endpoint`` answer 410 Gone (the user unsubscribed)."""
        with self._state:
            self._subscriptions[endpoint.rsplit("/", 1)[-1]].expired = True

    def fail_next(self, status: int) -> None:
        """Answer the next push with ``status``."""
        body = {"code": status, "errno": 999, "error": "scripted", "message": f"scripted {status}"}
        self.script("push", Scripted(status, body))

    def rate_limit_next(self, retry_after: float) -> None:
        """Answer the next push 429 with ``Retry-After: retry_after``."""
        body = {"code": 429, "errno": 999, "error": "Too Many Requests", "message": "slow down"}
        self.script("push", Scripted(429, body, {"Retry-After": f"{retry_after:g}"}))

    def slow_next(self, seconds: float) -> None:
        """Hold the next push for ``seconds`` before handling it as usual (it may be accepted)."""
        with self._state:
            self._delays.append(seconds)

    def reset(self) -> None:
        """Forget requests, received pushes, subscriptions and scripts.

        For a fake shared by many tests; a push still being held by
        :meth:`slow_next` may land after a reset, so tests that slow requests
        should use a fake of their own.
        """
        with self._state:
            self.received.clear()
            self._subscriptions.clear()
            self._delays.clear()
        super().reset()

    # --- checks -------------------------------------------------------------------

    def _validate(self, request: Request) -> str | None:
        try:
            request.environ[_PLAINTEXT] = self._check(request)
        except _Rejected as exc:
            request.environ[_REJECTED] = exc.status
            return f"{exc.status}: {exc}"
        return None

    def _dispatch(self, request: Request, error: str | None) -> Response:
        if error is not None:
            status = int(request.environ.get(_REJECTED, 400))
            return json_response({"code": status, "error": "rejected", "message": error}, status)
        return super()._dispatch(request, None)

    def _check(self, request: Request) -> bytes | None:
        """Check one push per RFC 8030/8291/8292; return its plaintext (None: no live target)."""
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            raise _Rejected(400, f"TTL header missing or not a non-negative integer: {ttl!r}")
        body = request.get_data(cache=True)
        if len(body) > MAX_BODY:
            raise _Rejected(413, f"payload of {len(body)} octets exceeds {MAX_BODY}")
        if body and request.headers.get("Content-Encoding") != "aes128gcm":
            encoding = request.headers.get("Content-Encoding")
            raise _Rejected(400, f"Content-Encoding must be aes128gcm, not {encoding!r}")
        key = self._check_vapid(request)
        with self._state:
            sub = self._subscriptions.get(request.path.rsplit("/", 1)[-1])
        if sub is None or sub.expired:
            return None
        if sub.application_server_key is not None and key != sub.application_server_key:
            raise _Rejected(403, "VAPID key differs from the subscription's applicationServerKey")
        if not body:
            return b""
        try:
            plaintext: bytes = http_ece.decrypt(
                body, private_key=sub.key, auth_secret=sub.auth, version="aes128gcm"
            )
        except Exception as exc:  # http_ece raises several kinds for a bad record
            raise _Rejected(
                400, f"payload does not decrypt with the subscription keys: {exc}"
            ) from exc
        return plaintext

    def _check_vapid(self, request: Request) -> str:
        """Verify the VAPID header; return its public key ``k``."""
        scheme, _, params = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "vapid":
            raise _Rejected(401, f"Authorization must use the vapid scheme, not {scheme!r}")
        fields = dict(p.strip().partition("=")[::2] for p in params.split(","))
        token, k = fields.get("t", ""), fields.get("k", "")
        if token.count(".") != 2 or not k:
            raise _Rejected(401, "vapid Authorization needs t=<JWT> and k=<public key>")
        head_b64, claims_b64, sig_b64 = token.split(".")
        try:
            header = json.loads(_b64url(head_b64))
            claims = json.loads(_b64url(claims_b64))
            sig = _b64url(sig_b64)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url(k))
            if header.get("alg") != "ES256" or len(sig) != 64:
                raise _Rejected(403, f"VAPID JWT must be ES256, not {header.get('alg')!r}")
            signature = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            public.verify(signature, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except (ValueError, binascii.Error) as exc:
            raise _Rejected(403, f"VAPID JWT or key is malformed: {exc}") from exc
        except InvalidSignature as exc:
            raise _Rejected(403, "VAPID JWT signature does not verify with k") from exc
        parts = urlsplit(self.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if claims.get("aud") != origin:
            raise _Rejected(403, f"VAPID aud {claims.get('aud')!r} is not {origin!r}")
        exp, now = claims.get("exp"), time.time()
        if not isinstance(exp, int) or exp <= now or exp > now + MAX_VAPID_LIFETIME:
            raise _Rejected(403, f"VAPID exp {exp!r} is not within the next 24 hours")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            raise _Rejected(403, "VAPID sub must be a mailto: or https: contact")
        return k

    # --- the push route -------------------------------------------------------------

    def _push(self, request: Request, params: dict[str, str]) -> Response:
        with self._state:
            delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            time.sleep(delay)
        with self._state:
            sub = self._subscriptions.get(params["sub_id"])
        if sub is None:
            return json_response({"code": 404, "errno": 102, "error": "Not Found"}, 404)
        if sub.expired:
            return json_response({"code": 410, "errno": 106, "error": "Gone"}, 410)
        plaintext: bytes = request.environ.get(_PLAINTEXT) or b""
        try:
            payload: Any = json.loads(plaintext)
        except ValueError:
            payload = plaintext.decode("utf-8", "replace")
        location = f"{self.url}/message/{next(self._ids)}"
        with self._state:
            self.received.append(
                ReceivedPush(
                    endpoint=f"{self.url}{request.path}",
                    payload=payload,
                    ttl=int(request.headers["TTL"]),
                    urgency=request.headers.get("Urgency"),
                    location=location,
                )
            )
        return Response(status=201, headers={"Location": location, "TTL": request.headers["TTL"]})
