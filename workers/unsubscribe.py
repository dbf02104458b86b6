"""Signed unsubscribe tokens: who (member id) stops receiving what (channel).

A token is ``base64url(payload || tag)`` without padding, where

- ``payload`` is a version byte (``1``), the member id as 8 big-endian bytes
  and the channel name in ASCII, and
- ``tag`` is HMAC-SHA256 over ``b"loyalcast/unsubscribe\\0" + payload`` with
  the program's signing key (``Settings.signing_key()``). The prefix keeps a
  tag made for unsubscribe links from being valid for any other use of the key.

Tokens do not expire: an unsubscribe link must keep working in an email read
months later (RFC 8058 asks for that), and it can only ever opt its own member
out. Tampering with any byte, or signing with another key, makes
:func:`read_token` raise :class:`BadToken`; tags are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct

__all__ = ["TOKEN_VERSION", "BadToken", "make_token", "read_token", "unsubscribe_url"]

TOKEN_VERSION = 1
_CONTEXT = b"loyalcast/unsubscribe\0"
_HEAD = struct.Struct(">BQ")
_TAG_BYTES = hashlib.sha256().digest_size
_MAX_CHANNEL = 16
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_CHANNEL = re.compile(r"[a-z_]{1,16}")


class BadToken(ValueError):
    """An unsubscribe token that is garbled, tampered with or signed with another key."""


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + payload, hashlib.sha256).digest()


def make_token(key: bytes, member_id: int, channel: str) -> str:
    """Sign an unsubscribe token for ``member_id`` on ``channel``.

    Args:
        key: the signing key (``Settings.signing_key()``).
        member_id: the member's id (positive).
        channel: a channel name such as ``email`` or ``sms``.

    Returns:
        A URL-safe string of about 65 characters.

    Raises:
        ValueError: the member id or the channel name cannot be encoded.
    """
    if not 0 < member_id < 2**63:
        raise ValueError(f"member id out of range: {member_id}")
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"not a channel name: {channel!r}")
    payload = _HEAD.pack(TOKEN_VERSION, member_id) + channel.encode("ascii")
    raw = payload + _tag(key, payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def read_token(key: bytes, token: str) -> tuple[int, str]:
    """Check a token's signature and return what it names.

    Args:
        key: the signing key the token was made with.
        token: the token from the link.

    Returns:
        ``(member_id, channel)``.

    Raises:
        BadToken: the token is garbled, of an unknown version, or its tag does
            not match (tampered, or signed with another key).
    """
    longest = _HEAD.size + _MAX_CHANNEL + _TAG_BYTES
    if len(token) > (longest * 4 + 2) // 3 or not _ALPHABET.fullmatch(token):
        raise BadToken("not an unsubscribe token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("not an unsubscribe token") from None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(payload) <= _HEAD.size or not hmac.compare_digest(tag, _tag(key, payload)):
        raise BadToken("unsubscribe token signature does not match")
    version, member_id = _HEAD.unpack_from(payload)
    channel = payload[_HEAD.size :].decode("ascii", errors="replace")
    if version != TOKEN_VERSION or member_id == 0 or not _CHANNEL.fullmatch(channel):
        raise BadToken("unsupported unsubscribe token")
    return member_id, channel


def unsubscribe_url(public_url: str, key: bytes, member_id: int, channel: str) -> str:
    """The link a message carries to unsubscribe its member from ``channel``.

    Args:
        public_url: where members reach the api (``Settings.public_url``).
        key: the signing key.
        member_id: the member's id.
        channel: the channel the link stops.

    Returns:
        ``<public_url>/unsubscribe/<token>``; the same URL serves the
        confirmation page (GET) and RFC 8058 one-click unsubscribe (POST).
    """
    return f"{public_url.rstrip('/')}/unsubscribe/{make_token(key, member_id, channel)}"
