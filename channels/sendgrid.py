"""Email through SendGrid's v3 Mail Send API, on the official ``sendgrid`` SDK.

Batches (DESIGN.md §8): messages of one campaign and category go out as ONE
request with one personalization per message, up to
:data:`MAX_PERSONALIZATIONS`, in the order of the messages, although each was
rendered for its member: :mod:`channels.sendgrid_body` sends their common
text once and each member's own text as substitutions. A message whose own
text passes SendGrid's 10,000-byte substitution cap is a request of its own.

Receipts: every message of one request gets the request's ``X-Message-Id``,
unsuffixed (a suffix would be ours alone; nothing SendGrid sends carries it).
Events carry our ``custom_args`` at their top level, so they are matched by
``delivery_id``. Their ``sg_message_id`` is that X-Message-Id, a dot and a
per-recipient suffix: the part before the dot equals the stored
``provider_message_id``, a fallback together with the event's ``email``.

Connections: the SDK's transport (python_http_client) builds a new urllib
opener for every request, and urllib sends ``Connection: close``, so there is
no keep-alive to switch on: each request opens its own connection. Grouping
is what keeps a broadcast to one request per 1000 recipients.

Failures map through :data:`ERRORS` in :func:`translate`. A 400 on a grouped
request is split (see :meth:`SendGridEmailChannel.send_batch`) so one bad
address does not fail the others. A failure that would repeat for every
request (401, 403, 429, 5xx, timeouts, network) stops the batch: the messages
not yet attempted get the same error.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar, NamedTuple

import sendgrid
from python_http_client.exceptions import HTTPError
from sendgrid.helpers import mail as sg

from .base import BatchChannel, Message, Outcome, Receipt
from .errors import DeliveryError, InvalidRecipient, PermanentDeliveryError, TransientDeliveryError
from .ratelimit import NoLimit, RateLimiter
from .sendgrid_body import MAX_PERSONALIZATIONS, Item, build_mail, prepare, requests_for

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_TIMEOUT",
    "ERRORS",
    "MAX_PERSONALIZATIONS",
    "ErrorRule",
    "SendGridEmailChannel",
    "translate",
]

DEFAULT_HOST = "https://api.sendgrid.com"
#: Seconds for each connect and each read (the SDK has no default: it would wait forever).
DEFAULT_TIMEOUT = 10.0
#: Seconds to wait after a 429 without a usable X-RateLimit-Reset.
DEFAULT_RATE_LIMIT_WAIT = 60.0
_NO_LIMIT = NoLimit()
_INDEXED_FIELD = re.compile(r"personalizations\.(\d+)\.")
_ADDRESS_FIELD = re.compile(r"personalizations\.\d+\.(to|cc|bcc)\.\d+\.email")
_ADDRESS_MESSAGE = re.compile(r"valid (email )?address|invalid email", re.IGNORECASE)


class ErrorRule(NamedTuple):
    """What one kind of SendGrid failure means to us."""

    error: type[DeliveryError]
    detail: str
    halts: bool
    """The next requests would fail the same way: the rest of the batch is not attempted."""


#: SendGrid failures -> our errors: HTTP statuses, then the named kinds.
#: "4xx" covers every other status below 500, "5xx" every status from 500.
ERRORS: dict[int | str, ErrorRule] = {
    400: ErrorRule(PermanentDeliveryError, "SendGrid refused the mail (400)", False),
    401: ErrorRule(
        PermanentDeliveryError, "SendGrid refused the API key (401): check SENDGRID_API_KEY", True
    ),
    403: ErrorRule(
        PermanentDeliveryError,
        "SendGrid forbids this send (403): check SENDGRID_API_KEY's Mail Send permission"
        " and that SENDGRID_FROM_EMAIL is a verified sender",
        True,
    ),
    413: ErrorRule(PermanentDeliveryError, "the mail is too large for SendGrid (413)", False),
    429: ErrorRule(TransientDeliveryError, "SendGrid rate limit (429)", True),
    "4xx": ErrorRule(PermanentDeliveryError, "SendGrid refused the mail", False),
    "5xx": ErrorRule(TransientDeliveryError, "SendGrid failed", True),
    "invalid_address": ErrorRule(InvalidRecipient, "SendGrid says the address is not valid", False),
    "timeout": ErrorRule(
        TransientDeliveryError,
        "SendGrid did not answer in time; it may have accepted the mail",
        True,
    ),
    "network": ErrorRule(TransientDeliveryError, "could not reach SendGrid", True),
}


def translate(exc: Exception, *, now: float | None = None) -> tuple[DeliveryError, bool]:
    """Our error for a failed SendGrid request, and whether it halts the batch.

    Args:
        exc: What the SDK raised: a ``python_http_client`` ``HTTPError``, an
            ``OSError`` (timeouts, refused connections) or an
            ``http.client.HTTPException``.
        now: The epoch second to measure ``X-RateLimit-Reset`` from.

    Returns:
        The error (a :mod:`channels.errors` class) and the rule's ``halts``.
    """
    if not isinstance(exc, HTTPError):
        key = "timeout" if isinstance(exc, TimeoutError) else "network"
        rule = ERRORS[key]
        # A read timeout is ambiguous: SendGrid may have accepted the mail.
        error = TransientDeliveryError(
            f"{rule.detail}: {exc!r}", code=key, ambiguous=key == "timeout"
        )
        return error, rule.halts
    status = int(exc.status_code)
    errors = _errors(exc.body)
    if status == 400:
        return _bad_request(errors), ERRORS[400].halts
    rule = ERRORS.get(status) or ERRORS["5xx" if status >= 500 else "4xx"]
    detail = _detail(rule.detail, errors)
    if rule.error is TransientDeliveryError:
        retry_after = None
        if status == 429:
            retry_after = _retry_after(exc.headers, time.time() if now is None else now)
        return TransientDeliveryError(detail, retry_after=retry_after, code=str(status)), rule.halts
    return rule.error(detail, code=str(status)), rule.halts


def _not_attempted(error: DeliveryError) -> DeliveryError:
    """The error for the rest of a halted batch: never ambiguous, they were not sent."""
    if isinstance(error, TransientDeliveryError) and error.ambiguous:
        return TransientDeliveryError(
            f"not attempted after: {error.detail}", retry_after=error.retry_after, code=error.code
        )
    return error


def _bad_request(errors: Sequence[Mapping[str, Any]]) -> DeliveryError:
    address = [e for e in errors if _is_address_error(e)]
    rule = ERRORS["invalid_address" if address else 400]
    return rule.error(_detail(rule.detail, address or errors), code="400")


def _is_address_error(error: Mapping[str, Any]) -> bool:
    field = str(error.get("field") or "")
    message = str(error.get("message") or "")
    return bool(_ADDRESS_FIELD.fullmatch(field) or _ADDRESS_MESSAGE.search(message))


def _detail(base: str, errors: Sequence[Mapping[str, Any]]) -> str:
    said = "; ".join(
        f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
        for e in errors
    )
    return f"{base}: {said}" if said else base


def _errors(body: Any) -> list[dict[str, Any]]:
    """The ``errors`` array of a SendGrid error body (empty when there is none)."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _retry_after(headers: Any, now: float) -> float:
    """Seconds until ``X-RateLimit-Reset`` (an epoch second), at least 1."""
    for name, relative in (("X-RateLimit-Reset", False), ("Retry-After", True)):
        try:
            value = float(str(headers.get(name)))
        except (AttributeError, ValueError):
            continue
        if math.isfinite(value):
            return max(1.0, value if relative else value - now)
    return DEFAULT_RATE_LIMIT_WAIT


@dataclass
class _Run:
    """The state of one ``send_batch`` call (the channel itself is shared by threads)."""

    halt: DeliveryError | None = None


class SendGridEmailChannel(BatchChannel):
    """Email through SendGrid, one request per campaign and category for up to 1000 mails.

    Args:
        api_key: The SendGrid API key (``SENDGRID_API_KEY``); must not be empty,
            or the SDK would read the environment itself.
        from_email: The verified sender, ``addr@example.com`` or
            ``"Name <addr@example.com>"``.
        host: The API's base URL (``https://api.eu.sendgrid.com`` for the EU).
        limiter: Asked before each request; told about 429s.
        timeout: Seconds for each connect and each read.

    Raises:
        ValueError: An empty key, a sender without an address, a timeout <= 0.
    """

    name = "email"
    live: ClassVar[bool] = True
    max_batch: ClassVar[int] = MAX_PERSONALIZATIONS

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        host: str = DEFAULT_HOST,
        limiter: RateLimiter = _NO_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty (the SDK would fall back to $SENDGRID_API_KEY)")
        if "@" not in parseaddr(from_email)[1]:
            raise ValueError(f"from_email {from_email!r} holds no email address")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.from_email = from_email
        self.host = host
        self.limiter = limiter
        self.timeout = timeout
        self._client = sendgrid.SendGridAPIClient(api_key, host=host)
        # Trap: python_http_client's timeout defaults to None (wait forever).
        # Clients built for each path segment copy it from here.
        self._client.client.timeout = timeout

    def send(self, message: Message) -> Receipt:
        """Send one message.

        Raises:
            DeliveryError: one of :mod:`channels.errors`.
        """
        outcome = self.send_batch([message])[0]
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """Send ``messages``, grouped; return one outcome per message, in order.

        A 400 on a grouped request sent nothing. If its errors name
        personalizations, those messages fail (``InvalidRecipient`` for an
        address) and the others are sent again as one request; if that fails
        with a 400 too, or the errors name no personalization, each message is
        sent alone. Errors that name only mail-wide fields (content, sender)
        fail the whole group, as they would fail each message alone.
        """
        outcomes: dict[int, Outcome] = {}
        items: list[Item] = []
        positions: list[int] = []  # items[k] is messages[positions[k]]
        for index, message in enumerate(messages):
            try:
                items.append(prepare(message))
            except DeliveryError as exc:
                outcomes[index] = exc
            else:
                positions.append(index)
        run = _Run()
        for request in requests_for(items):
            results = self._request([items[k] for k in request], run)
            outcomes.update(zip((positions[k] for k in request), results, strict=True))
        return [outcomes[i] for i in range(len(messages))]

    def _request(self, items: list[Item], run: _Run, *, pinpoint: bool = True) -> list[Outcome]:
        """One mail/send request for ``items``; one outcome per item."""
        if run.halt is not None:
            return [run.halt] * len(items)
        try:
            self.limiter.wait()
            response = self._client.send(build_mail(items, self.from_email))
        except HTTPError as exc:
            if exc.status_code == 400 and len(items) > 1:
                return self._split(items, _errors(exc.body), run, pinpoint=pinpoint)
            error, halts = translate(exc)
            if exc.status_code == 429 and isinstance(error, TransientDeliveryError):
                self.limiter.block(error.retry_after or DEFAULT_RATE_LIMIT_WAIT)
        except (OSError, http.client.HTTPException) as exc:
            error, halts = translate(exc)
        except TransientDeliveryError as exc:  # the limiter: no slot soon enough
            error, halts = exc, True
        except sg.SendGridException as exc:  # the SDK saw what looks like an API key in the body
            error, halts = (
                PermanentDeliveryError(f"the SendGrid SDK refused the mail: {exc}"),
                False,
            )
        else:
            now = datetime.now(UTC)
            message_id = response.headers.get("X-Message-Id") or "no-x-message-id"
            return [Receipt(provider_message_id=message_id, accepted_at=now) for _ in items]
        if halts:
            run.halt = _not_attempted(error)
        return [error] * len(items)

    def _split(
        self, items: list[Item], errors: list[dict[str, Any]], run: _Run, *, pinpoint: bool
    ) -> list[Outcome]:
        """Outcomes for a grouped request that SendGrid refused with a 400."""
        named: dict[int, list[dict[str, Any]]] = {}
        for err in errors if pinpoint else []:
            match = _INDEXED_FIELD.match(str(err.get("field") or ""))
            if match and int(match[1]) < len(items):
                named.setdefault(int(match[1]), []).append(err)
        if named:
            outcomes: dict[int, Outcome] = {i: _bad_request(e) for i, e in named.items()}
            rest = [i for i in range(len(items)) if i not in named]
            if rest:
                again = self._request([items[i] for i in rest], run, pinpoint=False)
                outcomes.update(zip(rest, again, strict=True))
            return [outcomes[i] for i in range(len(items))]
        fields = [str(e.get("field") or "") for e in errors]
        if errors and all(f and not f.startswith("personalizations") for f in fields):
            error = _bad_request(errors)  # content or sender: each alone would fail the same way
            return [error] * len(items)
        return [outcome for item in items for outcome in self._request([item], run)]

    def close(self) -> None:
        """Nothing to release: the SDK opens a connection per request."""
        return None
