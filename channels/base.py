"""What a channel is: the ``Channel`` protocol and the values that cross it.

A worker hands a channel a batch of rendered :class:`Message` values and gets
back, for each message in the same order, either a :class:`Receipt` (the
provider accepted it) or one of the errors of :mod:`channels.errors`. A channel
never touches the store; recording the outcome is the worker's job.

:class:`BatchChannel` is the base most channels want: it implements
``send_batch`` by calling ``send`` per message, so a provider module writes
only ``send`` unless the provider has a batch API. With ``concurrency`` above
1, those calls run on a thread pool of that size, one per channel object and
so per worker process: the requests of every job the process runs share it,
which bounds what one process keeps in flight to the provider. Each call
runs in a copy of the calling job's context variables (:meth:`BatchChannel.in_pool`),
so what a pool thread logs carries the job's log context.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .errors import DeliveryError

_T = TypeVar("_T")
_R = TypeVar("_R")

__all__ = [
    "CHANNEL_NAMES",
    "BatchChannel",
    "Channel",
    "Message",
    "Outcome",
    "Receipt",
]

#: Every channel a campaign can name, in no particular order.
CHANNEL_NAMES = ("sms", "email", "push", "direct_mail")


@dataclass(frozen=True, kw_only=True)
class Message:
    """One rendered message for one recipient on one channel."""

    delivery_id: int
    dedupe_key: str
    member_id: int
    channel: str
    to: str
    """Where it goes: an E.164 number, an email address, a push token, a postal label."""
    parts: Mapping[str, str]
    """The rendered parts, e.g. ``{"subject": ..., "html": ..., "text": ...}``."""
    category: str
    campaign: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """The provider accepted a message."""

    provider_message_id: str
    accepted_at: datetime


Outcome = Receipt | DeliveryError


@runtime_checkable
class Channel(Protocol):
    """A way to reach members: SMS, email, push or direct mail, live or outbox."""

    @property
    def name(self) -> str:
        """The channel name a campaign uses (``sms``, ``email``, ...)."""
        ...

    @property
    def live(self) -> bool:
        """True when it talks to a real provider, False in outbox mode."""
        ...

    @property
    def max_batch(self) -> int:
        """How many messages one ``send_batch`` call takes at most."""
        ...

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """Send ``messages``; return one outcome per message, in order.

        Raises:
            TransientDeliveryError: the whole batch could not be attempted.
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class BatchChannel:
    """Base for channels whose provider takes one message per call.

    Subclasses set ``concurrency`` (requests in flight at once, per channel
    object) in their constructor; it is 1, one after the other, unless they do.
    """

    name: str
    live: ClassVar[bool] = True
    max_batch: ClassVar[int] = 50
    concurrency: int = 1
    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

    def send(self, message: Message) -> Receipt:
        """Send one message; raise a :mod:`channels.errors` error if it fails."""
        raise NotImplementedError

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """Send each message (``concurrency`` at a time); outcomes in the messages' order."""
        return self.in_pool(self._attempt, messages)

    def _attempt(self, message: Message) -> Outcome:
        try:
            return self.send(message)
        except DeliveryError as exc:
            return exc

    def in_pool(self, call: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``call`` on each item, ``concurrency`` at a time; results in the items' order.

        Each call runs in a copy of the caller's context variables (structlog's
        bound log context among them), as it would have in the caller's thread.
        One item, or ``concurrency`` 1, runs here.
        """
        if self.concurrency <= 1 or len(items) <= 1:
            return [call(item) for item in items]
        context = contextvars.copy_context()
        return list(self._executor().map(lambda item: context.copy().run(call, item), items))

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.concurrency, thread_name_prefix=f"send-{self.name}"
                )
            return self._pool

    def close(self) -> None:
        """Stop the send pool, if one was started (subclasses call this too)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
