"""What the HTTP providers have in common: reading Retry-After, and knowing a send is ambiguous."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from .errors import TransientDeliveryError

__all__ = ["is_ambiguous", "retry_after_seconds", "transport_error"]


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent.

    A date in the past, or a negative number, gives 0; something unreadable gives None.
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC too
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_ambiguous(exc: requests.RequestException) -> bool:
    """True when a failed request may still have reached the provider.

    A read timeout, or an answer cut off mid-way, leaves the provider holding
    the message or not; a refused connection or a connect timeout does not.
    requests reports the cut answer three ways: the connection dropped before
    the status line (``ConnectionError`` from urllib3's ``ProtocolError``),
    the body cut off or undecodable (``ChunkedEncodingError``,
    ``ContentDecodingError``), or the body's read timing out
    (``ConnectionError`` from ``ReadTimeoutError``).
    """
    if isinstance(
        exc,
        requests.ReadTimeout
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    ):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        cause, ProtocolError | ReadTimeoutError
    )


def transport_error(
    exc: requests.RequestException, who: str, timeout: float
) -> TransientDeliveryError:
    """The error for a request that got no usable answer from ``who``.

    Ambiguous (the provider may have the message) after a read timeout or a cut
    answer; a plain, safely retried transient error when it was never reached.
    """
    if is_ambiguous(exc):
        return TransientDeliveryError(
            f"{who} did not answer in {timeout} s or cut its answer off; "
            "it may have accepted the message",
            code="timeout",
            ambiguous=True,
        )
    return TransientDeliveryError(f"{who} could not be reached: {exc}", code="network")
