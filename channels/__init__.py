"""Channels: how a rendered message reaches a member, and the closed set of ways it fails.

``Channel`` (the protocol), ``Message`` and ``Receipt`` are in :mod:`channels.base`;
the errors in :mod:`channels.errors`; the file outbox, used by every channel
that has no credentials, in :mod:`channels.outbox`. Channels import nothing
else of loyalcast's.
"""

from .base import CHANNEL_NAMES, BatchChannel, Channel, Message, Outcome, Receipt
from .errors import (
    DeliveryError,
    InvalidRecipient,
    PermanentDeliveryError,
    RecipientOptedOut,
    TransientDeliveryError,
)
from .outbox import OutboxChannel, read_outbox
from .ratelimit import NoLimit, RateLimiter, TokenBucket

__all__ = [
    "CHANNEL_NAMES",
    "BatchChannel",
    "Channel",
    "DeliveryError",
    "InvalidRecipient",
    "Message",
    "NoLimit",
    "OutboxChannel",
    "Outcome",
    "PermanentDeliveryError",
    "RateLimiter",
    "Receipt",
    "RecipientOptedOut",
    "TokenBucket",
    "TransientDeliveryError",
    "read_outbox",
]
