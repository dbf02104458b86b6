"""Policy decided just before sending: which channel, if any, may carry a message.

Consent rule (written here because the README quotes it):

- An opt-out on a channel wins at once, whatever the category.
- ``marketing`` needs an explicit opt-in on the channel.
- ``service`` and ``transactional`` need only the absence of an opt-out.

Reachability: ``sms`` needs a valid E.164 phone (phonenumbers), ``email`` a
syntactically valid address (email-validator, no DNS), ``push`` a
live (not revoked) FCM token or Web Push subscription (the newest one), and
``direct_mail`` a complete postal address: line 1, city, postal code and
country, plus a state for the US. With a preference order the first channel that is
both consented and reachable carries the message; when none is, the message is
suppressed with the reason of the most preferred channel and a detail naming
every channel's problem, e.g. ``sms: opted out 2026-11-02 via STOP; email: no
address``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import Consent, ConsentStatus, Member, PushToken
from store.bulk import among

__all__ = [
    "ConsentState",
    "Route",
    "Skip",
    "load_reachability",
    "postal_address",
    "route",
    "valid_email",
    "valid_phone",
]


@dataclass(frozen=True)
class Route:
    """Send on ``channel`` to ``to``; ``metadata`` carries what the provider needs besides."""

    channel: str
    to: str
    metadata: dict[str, Any] = field(default_factory=dict)


class ConsentState(NamedTuple):
    """A member's current consent on one channel, as policy reads it (a ``consents`` row).

    Loaded as plain rows rather than :class:`store.Consent` objects: the deliver
    job reads thousands at a time and never changes them.
    """

    channel: str
    status: str
    source: str
    updated_at: datetime


@dataclass(frozen=True)
class Skip:
    """Do not send; ``reason`` is machine-readable, ``detail`` for people."""

    reason: str
    detail: str


def _consent_problem(consent: ConsentState | None, category: str) -> str | None:
    if consent is not None and consent.status == ConsentStatus.OPTED_OUT:
        return f"opted out {consent.updated_at:%Y-%m-%d} via {consent.source}"
    if category == "marketing" and (consent is None or consent.status != ConsentStatus.OPTED_IN):
        return "no opt-in for marketing"
    return None


def postal_address(member: Member) -> dict[str, str] | None:
    """The member's postal address for a print vendor, or None when it is incomplete."""
    fields = {
        "name": (member.name or "").strip(),
        "line1": (member.address_line1 or "").strip(),
        "line2": (member.address_line2 or "").strip(),
        "city": (member.address_city or "").strip(),
        "state": (member.address_state or "").strip(),
        "zip": (member.address_zip or "").strip(),
        "country": (member.address_country or "").strip().upper(),
    }
    required = ["line1", "city", "zip", "country"] + (
        ["state"] if fields["country"] == "US" else []
    )
    if any(not fields[key] for key in required):
        return None
    return fields


@lru_cache(maxsize=65536)
def valid_phone(phone: str) -> bool:
    """True for a valid number written in E.164 (checked with phonenumbers)."""
    if not (phone.startswith("+") and phone[1:].isdigit()):
        return False
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(phone, None)))
    except phonenumbers.NumberParseException:
        return False


#: Plain ASCII addresses, a strict subset of what email-validator accepts: a
#: dot-atom of letters, digits and ``_+-`` before the @; after it, labels of
#: letters, digits and inner hyphens (none doubled, so no Punycode), ending in
#: a TLD of letters. Checking one costs about 1 us against email-validator's 35.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\Z"
)


def _plainly_valid(address: str) -> bool:
    """True when ``address`` is plain enough to be valid without email-validator's full check.

    False means only "not plain": the full check decides.
    """
    if len(address) > 254 or not _PLAIN_EMAIL.match(address):
        return False
    local, _, domain = address.partition("@")
    domain = domain.lower()
    return (
        len(local) <= 64
        and len(domain) <= 253
        and "--" not in domain
        and not any(domain == d or domain.endswith("." + d) for d in SPECIAL_USE_DOMAIN_NAMES)
    )


@lru_cache(maxsize=65536)
def valid_email(address: str) -> bool:
    """True for a syntactically valid address (email-validator; no DNS lookup).

    Plain ASCII addresses, the usual kind, are accepted by a stricter regular
    expression first (:data:`_PLAIN_EMAIL`); every other address gets
    email-validator's full check.
    """
    if _plainly_valid(address):
        return True
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _reach(member: Member, channel: str, tokens: Sequence[PushToken]) -> Route | str:
    """A route on ``channel``, or why the member cannot be reached there."""
    if channel == "sms":
        if not member.phone:
            return "no phone"
        return Route(channel, member.phone) if valid_phone(member.phone) else "invalid phone"
    if channel == "email":
        if not member.email:
            return "no address"
        return Route(channel, member.email) if valid_email(member.email) else "email invalid"
    if channel == "push":
        live = [t for t in tokens if t.revoked_at is None]
        if not live:
            return "no live device"
        token = live[-1]
        metadata: dict[str, Any] = {"push_kind": token.kind, "push_token_id": token.id}
        if token.kind == "webpush":
            metadata["webpush_keys"] = dict(token.keys or {})
        return Route(channel, token.token, metadata)
    if channel == "direct_mail":
        address = postal_address(member)
        if address is None:
            return "incomplete postal address"
        label = ", ".join(v for k, v in address.items() if v and k != "name")
        return Route(channel, label, {"address": address})
    return f"unknown channel {channel!r}"


def route(
    member: Member,
    consents: Mapping[str, ConsentState],
    tokens: Sequence[PushToken],
    channels: Sequence[str],
    category: str,
) -> Route | Skip:
    """Choose the first consented, reachable channel of ``channels`` for ``member``."""
    problems: list[tuple[str, str, str]] = []
    for channel in channels:
        problem = _consent_problem(consents.get(channel), category)
        if problem is not None:
            problems.append((channel, "consent", problem))
            continue
        reached = _reach(member, channel, tokens)
        if isinstance(reached, str):
            problems.append((channel, "unreachable", reached))
            continue
        return reached
    reason = problems[0][1] if problems else "no_channel"
    detail = "; ".join(f"{channel}: {text}" for channel, _, text in problems)
    return Skip(reason, detail or "no channel")


def load_reachability(
    session: Session, member_ids: Collection[int]
) -> tuple[dict[int, dict[str, ConsentState]], dict[int, list[PushToken]]]:
    """What :func:`route` needs besides the member, for many members in two queries.

    Returns consents by member and channel, and each member's live push tokens
    (not revoked) in the order they were registered.
    """
    consents: dict[int, dict[str, ConsentState]] = defaultdict(dict)
    for member_id, channel, status, source, updated_at in session.execute(
        select(
            Consent.member_id, Consent.channel, Consent.status, Consent.source, Consent.updated_at
        ).where(among(session, Consent.member_id, member_ids))
    ):
        consents[member_id][channel] = ConsentState(channel, status, source, updated_at)
    tokens: dict[int, list[PushToken]] = defaultdict(list)
    for token in session.scalars(
        select(PushToken)
        .where(among(session, PushToken.member_id, member_ids), PushToken.revoked_at.is_(None))
        .order_by(PushToken.id)
    ):
        tokens[token.member_id].append(token)
    return consents, tokens
