"""The closed set of delivery errors every channel raises (DESIGN.md §9).

::

    DeliveryError                   (never raised itself)
    ├── TransientDeliveryError      try again, not before ``retry_after`` seconds;
    │                               ``ambiguous``: the provider may have it already
    └── PermanentDeliveryError      never again for this message
        ├── InvalidRecipient        the address, number or token is not valid
        └── RecipientOptedOut       the provider says the recipient opted out

A provider's own exceptions and status codes are translated in exactly one
table per provider module; nothing else leaves a channel.
"""

from __future__ import annotations

__all__ = [
    "DeliveryError",
    "InvalidRecipient",
    "PermanentDeliveryError",
    "RecipientOptedOut",
    "TransientDeliveryError",
]


class DeliveryError(Exception):
    """A message could not be handed to the provider."""

    #: Machine-readable reason recorded on the delivery row.
    reason = "error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        self.detail = detail
        self.code = code
        super().__init__(f"{detail} (code {code})" if code else detail)


class TransientDeliveryError(DeliveryError):
    """The provider could not take it now; it may succeed later.

    ``ambiguous`` is true when the request may have reached the provider and
    been accepted (a read timeout, a reply cut off): sending again could
    deliver the message twice, so the worker records the delivery as
    ``unknown`` unless its campaign says ``on_ambiguous: resend`` (DESIGN.md §3).
    """

    reason = "transient"

    def __init__(
        self,
        detail: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        ambiguous: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        super().__init__(detail, code=code)


class PermanentDeliveryError(DeliveryError):
    """The provider refused it for good; sending again would fail the same way."""

    reason = "permanent"


class InvalidRecipient(PermanentDeliveryError):
    """The recipient's address, number or token is not valid for this channel."""

    reason = "invalid_recipient"


class RecipientOptedOut(PermanentDeliveryError):
    """The provider reports that the recipient opted out of this sender."""

    reason = "opted_out"
