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

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import Consent, ConsentStatus, Member, PushToken
from store.bulk import among

__all__ = [
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


@dataclass(frozen=True)
class Skip:
    """Do not send; ``reason`` is machine-readable, ``detail`` for people."""

    reason: str
    detail: str


def _consent_problem(consent: Consent | None, category: str) -> str | None:
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


@lru_cache(maxsize=65536)
def valid_email(address: str) -> bool:
    """True for a syntactically valid address (email-validator; no DNS lookup)."""
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
    consents: Mapping[str, Consent],
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
) -> tuple[dict[int, dict[str, Consent]], dict[int, list[PushToken]]]:
    """What :func:`route` needs besides the member, for many members in two queries.

    Returns consents by member and channel, and each member's live push tokens
    (not revoked) in the order they were registered.
    """
    consents: dict[int, dict[str, Consent]] = defaultdict(dict)
    for consent in session.scalars(
        select(Consent).where(among(session, Consent.member_id, member_ids))
    ):
        consents[consent.member_id][consent.channel] = consent
    tokens: dict[int, list[PushToken]] = defaultdict(list)
    for token in session.scalars(
        select(PushToken)
        .where(among(session, PushToken.member_id, member_ids), PushToken.revoked_at.is_(None))
        .order_by(PushToken.id)
    ):
        tokens[token.member_id].append(token)
    return consents, tokens
