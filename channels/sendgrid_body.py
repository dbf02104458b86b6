"""The body of a SendGrid v3 Mail Send request: many messages, one request.

SendGrid takes up to :data:`MAX_PERSONALIZATIONS` recipients per request, one
*personalization* each, but only one ``content`` (HTML and text) for all of
them. Our messages are rendered per member, so their content differs; what
differs is substituted per personalization (SendGrid's ``substitutions``,
which apply to the HTML and text content):

- per part (HTML, text), the values' longest common prefix and suffix form
  the shared content, with a tag between them: ``<prefix><tag><suffix>``;
- each personalization substitutes the tag with its own middle part, so the
  recipient gets exactly its rendered text;
- a part identical in every message is sent as it is, without a tag; a
  subject that differs from the first message's is the personalization's own
  ``subject`` (SendGrid's override, not a substitution).

A member-specific greeting and points balance are short middles; a long
shared head and footer (styles, layout, legal text) are sent once. The tags
hold a random token of the request, checked to occur nowhere in the
request's subjects, shared text or middles, so a member's text can never be
read as a tag. SendGrid caps a personalization's substitutions at 10,000
bytes (:data:`MAX_SUBSTITUTION_BYTES`, keys and values counted): a message
whose middles are larger is a request of its own, with its whole content.

Messages share a request only when what SendGrid sets per request is the
same for them: the campaign and category (SendGrid categories) and which
parts they have. Each personalization carries the recipient, the message's
``custom_args`` (``delivery_id``, ``dedupe_key``) and its headers (the RFC
8058 one-click ``List-Unsubscribe`` pair).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sendgrid.helpers import mail as sg

from .base import Message
from .errors import PermanentDeliveryError

__all__ = [
    "MAX_CATEGORY_LENGTH",
    "MAX_PERSONALIZATIONS",
    "MAX_SUBSTITUTION_BYTES",
    "ONE_CLICK",
    "Item",
    "build_mail",
    "prepare",
    "requests_for",
    "shareable",
]

#: SendGrid takes at most 1000 personalizations per request.
MAX_PERSONALIZATIONS = 1000
#: SendGrid's cap on one personalization's substitutions (keys and values, UTF-8).
MAX_SUBSTITUTION_BYTES = 10_000
#: SendGrid rejects longer category names.
MAX_CATEGORY_LENGTH = 255
ONE_CLICK = "List-Unsubscribe=One-Click"
_HTTPS_URL = re.compile(r"https://[^\s<>,\"]+")
#: The content parts, with their MIME types (text first, as SendGrid wants).
_PARTS = (("text", sg.MimeType.text), ("html", sg.MimeType.html))


@dataclass(frozen=True)
class Item:
    """A message checked and ready to become one personalization."""

    message: Message
    headers: dict[str, str]
    key: tuple[str, ...]
    """Items with equal keys may share a request: one set of categories, the same parts."""


def _categories(message: Message) -> list[str]:
    names = [n[:MAX_CATEGORY_LENGTH] for n in (message.campaign, message.category) if n]
    return list(dict.fromkeys(names))  # SendGrid wants them unique


def _unsubscribe_headers(message: Message) -> dict[str, str]:
    """RFC 8058 one-click headers: required for marketing, added to others when given."""
    url = message.metadata.get("unsubscribe_url")
    if not url:
        if message.category == "marketing":
            raise PermanentDeliveryError(
                "marketing email must carry a one-click List-Unsubscribe (RFC 8058) but"
                " metadata['unsubscribe_url'] is missing; not sent",
                code="no_unsubscribe_url",
            )
        return {}
    if not (isinstance(url, str) and url.isascii() and _HTTPS_URL.fullmatch(url)):
        # The link is signed: it is left out of the message, which is stored.
        raise PermanentDeliveryError(
            "metadata['unsubscribe_url'] must be an absolute https:// URL without spaces"
            " (RFC 8058); not sent",
            code="bad_unsubscribe_url",
        )
    if not urlsplit(url).hostname:
        raise PermanentDeliveryError("metadata['unsubscribe_url'] has no host; not sent")
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}


def prepare(message: Message) -> Item:
    """Check one message and make it an :class:`Item`.

    Raises:
        PermanentDeliveryError: no subject, no content, or a missing or bad
            unsubscribe link on a marketing email.
    """
    parts = message.parts
    if not parts.get("subject"):
        raise PermanentDeliveryError("the email has no subject", code="no_subject")
    if not (parts.get("html") or parts.get("text")):
        raise PermanentDeliveryError("the email has neither HTML nor text", code="no_content")
    has = tuple(name for name, _ in _PARTS if parts.get(name))
    key = (message.campaign or "", message.category or "", *has)
    return Item(message, _unsubscribe_headers(message), key)


@dataclass
class _Shared:
    """One part's shared content over a group, and each item's middle."""

    name: str
    prefix: str = ""
    suffix: str = ""
    middles: list[str] | None = None
    """None when every item has the same value (no tag, no substitution)."""
    tag: str = ""
    sizes: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, values: Sequence[str]) -> _Shared:
        first = values[0]
        if all(value == first for value in values):
            return cls(name, prefix=first)
        prefix = _common_prefix(values)
        cut = len(prefix)
        rests = [value[cut:][::-1] for value in values]
        suffix = _common_prefix(rests)[::-1]
        end = len(suffix)
        middles = [value[cut : len(value) - end] for value in values]
        return cls(name, prefix, suffix, middles, sizes=[len(m.encode()) for m in middles])

    def content(self) -> str:
        return f"{self.prefix}{self.tag}{self.suffix}"


def _common_prefix(values: Sequence[str]) -> str:
    """The longest prefix of every value (the strings' own, not a path's)."""
    low, high = min(values), max(values)  # the prefix of these two is everyone's
    size = 0
    top = len(low)
    while size < top:  # binary search on slice equality: the comparisons run in C
        mid = (size + top + 1) // 2
        if low[:mid] == high[:mid]:
            size = mid
        else:
            top = mid - 1
    return low[:size]


def shareable(items: Sequence[Item]) -> tuple[list[int], list[int]]:
    """Split ``items`` (one key) into those one request can carry and those that go alone.

    Returns:
        The indexes of the items to send together, and of those whose
        substitutions would pass :data:`MAX_SUBSTITUTION_BYTES`.
    """
    if len(items) < 2:
        return list(range(len(items))), []
    shared = _share(items)
    # Tags are ASCII and under 40 bytes each: leave room for them.
    budget = MAX_SUBSTITUTION_BYTES - 40 * len(shared)
    together: list[int] = []
    alone: list[int] = []
    for index in range(len(items)):
        size = sum(part.sizes[index] for part in shared if part.middles is not None)
        (together if size <= budget else alone).append(index)
    return together, alone


def requests_for(items: Sequence[Item]) -> list[list[int]]:
    """How a batch of items goes out: the indexes each request carries, in sending order.

    Items of one key share requests of up to :data:`MAX_PERSONALIZATIONS`, in
    their order; within each, an item over the substitution cap goes alone,
    after the request it was cut from.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.key, []).append(index)
    requests: list[list[int]] = []
    for indexes in groups.values():
        for start in range(0, len(indexes), MAX_PERSONALIZATIONS):
            chunk = indexes[start : start + MAX_PERSONALIZATIONS]
            together, alone = shareable([items[i] for i in chunk])
            requests += [[chunk[i] for i in together]] if together else []
            requests += [[chunk[i]] for i in alone]
    return requests


def _share(items: Sequence[Item]) -> list[_Shared]:
    names = [name for name, _ in _PARTS if items[0].message.parts.get(name)]
    return [_Shared.of(name, [item.message.parts[name] for item in items]) for name in names]


def _tagged(shared: list[_Shared], items: Sequence[Item]) -> None:
    """Give each varying part a tag that occurs in no text of the request."""
    varying = [part for part in shared if part.middles is not None]
    if not varying:
        return
    texts = [item.message.parts["subject"] for item in items]
    texts += [text for part in shared for text in (part.prefix, part.suffix, *(part.middles or ()))]
    while True:
        token = secrets.token_hex(8)
        tags = [f"-lc-{part.name}-{token}-" for part in varying]
        if not any(tag in text for tag in tags for text in texts):
            break
    for part, tag in zip(varying, tags, strict=True):
        part.tag = tag


def _personalization(item: Item, index: int, shared: list[_Shared], subject: str) -> dict[str, Any]:
    message = item.message
    # Set, not parsed: To("not-an-address") would turn it into a display name.
    personalization: dict[str, Any] = {
        "to": [{"email": message.to}],
        "custom_args": {"delivery_id": str(message.delivery_id), "dedupe_key": message.dedupe_key},
    }
    if item.headers:
        personalization["headers"] = dict(item.headers)
    if message.parts["subject"] != subject:
        personalization["subject"] = message.parts["subject"]
    substitutions = {part.tag: part.middles[index] for part in shared if part.middles is not None}
    if substitutions:
        personalization["substitutions"] = substitutions
    return personalization


def build_mail(items: Sequence[Item], from_email: str) -> dict[str, Any]:
    """The JSON body for ``items`` (one key; see :func:`shareable` for the size cap).

    Personalizations follow the order of ``items``; the mail's subject is the
    first item's.

    Raises:
        sendgrid.helpers.mail.SendGridException: the SDK's check found what
            looks like an API key at the start of the content.
    """
    first = items[0].message
    shared = _share(items)
    _tagged(shared, items)
    mimes = dict(_PARTS)
    body: dict[str, Any] = {
        "from": sg.From(from_email).get(),
        "subject": first.parts["subject"],
        # The SDK's Content checks for an API key; a part is present only when non-empty.
        "content": [sg.Content(mimes[part.name], part.content()).get() for part in shared],
        "personalizations": [
            _personalization(item, index, shared, first.parts["subject"])
            for index, item in enumerate(items)
        ],
    }
    categories = _categories(first)
    if categories:
        body["categories"] = categories
    return body
