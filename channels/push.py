"""The ``push`` channel: one channel, two providers, chosen per device.

A member's device is either an FCM registration token (apps) or a Web Push
subscription (browsers). The worker puts the device in the message:

- ``message.to``: the FCM token or the subscription's endpoint;
- ``message.metadata["push_kind"]``: ``"fcm"`` or ``"webpush"``;
- ``message.metadata["webpush_keys"]``: ``{"p256dh": ..., "auth": ...}`` for Web Push.

``message.parts`` holds the rendered ``title`` and ``body``; the delivery id
travels in the data payload (``delivery_id``, a string as FCM data requires)
so the app or service worker can report opens. A kind whose sender is not
configured fails the message permanently, naming the missing settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .base import BatchChannel, Message, Receipt
from .errors import InvalidRecipient, PermanentDeliveryError
from .fcm import FcmSender
from .webpush import WebPushSender

__all__ = ["PUSH_KINDS", "PushChannel"]

#: The device kinds a push token row can have.
PUSH_KINDS = ("fcm", "webpush")


class PushChannel(BatchChannel):
    """Sends push notifications through FCM or Web Push, by each message's ``push_kind``.

    Args:
        fcm: the FCM sender, or None when FCM is not configured.
        webpush: the Web Push sender, or None when VAPID is not configured.
        concurrency: requests in flight at once (see :class:`channels.base.BatchChannel`).
    """

    name = "push"
    live: ClassVar[bool] = True

    def __init__(
        self, fcm: FcmSender | None, webpush: WebPushSender | None, *, concurrency: int = 1
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be positive")
        self.fcm = fcm
        self.webpush = webpush
        self.concurrency = concurrency

    def send(self, message: Message) -> Receipt:
        """Send one message to the device it names.

        Raises:
            InvalidRecipient: the token or subscription is invalid or gone (revoke it).
            TransientDeliveryError: try again later (``retry_after`` when the provider said).
            PermanentDeliveryError: never again for this message, e.g. the kind's
                sender is not configured, the credentials were refused, or the
                message has no body.
        """
        kind = message.metadata.get("push_kind")
        title = message.parts.get("title", "")
        body = message.parts.get("body", "")
        if not body:
            raise PermanentDeliveryError("a push message needs a rendered body", code="no_body")
        data = {"delivery_id": str(message.delivery_id)}
        if kind == "fcm":
            if self.fcm is None:
                raise PermanentDeliveryError(
                    "FCM is not configured: set GOOGLE_APPLICATION_CREDENTIALS and FCM_PROJECT_ID",
                    code="fcm_not_configured",
                )
            return self.fcm.send(message.to, title=title, body=body, data=data)
        if kind == "webpush":
            if self.webpush is None:
                raise PermanentDeliveryError(
                    "Web Push is not configured: set VAPID_PRIVATE_KEY and VAPID_SUBJECT",
                    code="webpush_not_configured",
                )
            keys = message.metadata.get("webpush_keys")
            if not isinstance(keys, Mapping) or not keys.get("p256dh") or not keys.get("auth"):
                raise InvalidRecipient(
                    "the Web Push subscription has no p256dh and auth keys", code="webpush_keys"
                )
            return self.webpush.send(message.to, keys, title=title, body=body, data=data)
        raise PermanentDeliveryError(
            f"push_kind must be one of {', '.join(PUSH_KINDS)}, not {kind!r}", code="push_kind"
        )

    def close(self) -> None:
        """Stop the send pool and close both senders' HTTP sessions."""
        super().close()
        for sender in (self.fcm, self.webpush):
            if sender is not None:
                sender.close()
