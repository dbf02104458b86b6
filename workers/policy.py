"""Policy decided just before sending: which channel, if any, may carry a message.

Consent rule (written here because the README quotes it):

- An opt-out on a channel wins at once, whatever the category.
- ``marketing`` needs an explicit opt-in on the channel.
- ``service`` and ``transactional`` need only the absence of an opt-out.

Reachability: ``sms`` needs an E.164 phone, ``email`` an address, ``push`` a
live (not revoked) token. With a preference order the first channel that is
both consented and reachable carries the message; when none is, the message is
suppressed with the reason of the most preferred channel and a detail naming
every channel's problem, e.g. ``sms: opted out 2026-11-02 via STOP; email: no
address``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from store import Consent, ConsentStatus, Member, PushToken

__all__ = ["Route", "Skip", "route"]


@dataclass(frozen=True)
class Route:
    """Send on ``channel`` to ``to``."""

    channel: str
    to: str


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


def _address(member: Member, channel: str, tokens: Sequence[PushToken]) -> str | None:
    if channel == "sms":
        phone = member.phone
        return phone if phone and phone.startswith("+") and phone[1:].isdigit() else None
    if channel == "email":
        return member.email or None
    if channel == "push":
        live = [t for t in tokens if t.revoked_at is None]
        return live[-1].token if live else None
    return None


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
        to = _address(member, channel, tokens)
        if to is None:
            what = {"sms": "no valid phone", "email": "no address", "push": "no live token"}
            problems.append((channel, "unreachable", what.get(channel, "no address")))
            continue
        return Route(channel, to)
    reason = problems[0][1] if problems else "no_channel"
    detail = "; ".join(f"{channel}: {text}" for channel, _, text in problems)
    return Skip(reason, detail or "no channel")
