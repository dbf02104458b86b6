"""A forecast's result: counts by outcome, samples, ETA per channel, and its JSON form.

The counts use the ledger's own words, ``(status, reason)``: ``sent``,
``suppressed`` with the policy's reason (``consent``, ``unreachable``,
``frequency_cap``, ``household``), ``deferred`` (``quiet_hours``) and
``failed`` (``render_error``, ``permanent``), so a forecast can be compared
with ``campaigns status`` after the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loyalcast.settings import Settings

__all__ = ["ChannelEta", "Forecast", "SampleRender", "eta_for"]

#: The order outcomes are listed in.
_STATUS_ORDER = {"sent": 0, "deferred": 1, "suppressed": 2, "failed": 3}


@dataclass(frozen=True, kw_only=True)
class SampleRender:
    """One member's message as the real renderer renders it."""

    member: str
    """The member's external id."""
    to: str
    sent_at: datetime
    parts: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class ChannelEta:
    """How long a channel's messages take at the configured provider rates."""

    channel: str
    messages: int
    live: bool
    """False when the channel writes to the outbox (nothing waits there)."""
    rates: dict[str, float]
    """Messages per second, per provider bucket (empty: no rate, e.g. direct mail)."""
    starts_at: datetime
    finishes_at: datetime

    @property
    def seconds(self) -> float:
        return (self.finishes_at - self.starts_at).total_seconds()


def _rate(settings: Settings, provider: str) -> float:
    rates = {
        "twilio": settings.twilio_rate,
        "sendgrid": settings.sendgrid_rate,
        "fcm": settings.fcm_rate,
        "webpush": settings.webpush_rate,
    }
    return rates[provider]


def eta_for(
    channel: str,
    leaving: dict[str | None, Counter[datetime]],
    settings: Settings,
    live: bool,
) -> ChannelEta:
    """The channel's ETA: each provider bucket drains its messages from their send instants.

    Args:
        channel: the channel's name.
        leaving: per provider (None: no rate), how many messages are due at each instant.
        settings: the configured rates.
        live: whether the channel is live.
    """
    starts = min(instant for instants in leaving.values() for instant in instants)
    finishes = starts
    rates: dict[str, float] = {}
    for provider, instants in leaving.items():
        if provider is None:
            finishes = max(finishes, max(instants))
            continue
        rate = rates[provider] = _rate(settings, provider)
        clock: datetime | None = None
        for instant in sorted(instants):
            begin = instant if clock is None else max(clock, instant)
            clock = begin + timedelta(seconds=instants[instant] / rate)
        if clock is not None:
            finishes = max(finishes, clock)
    messages = sum(sum(instants.values()) for instants in leaving.values())
    return ChannelEta(
        channel=channel,
        messages=messages,
        live=live,
        rates=rates,
        starts_at=starts,
        finishes_at=finishes,
    )


@dataclass(frozen=True, kw_only=True)
class Forecast:
    """What a campaign's run would do; see :mod:`workers.forecast`."""

    campaign: str
    kind: str
    forecastable: bool
    reason: str | None
    """Why the campaign cannot be forecast (``forecastable`` false)."""
    at: datetime | None
    """The instant the run is planned."""
    audience: int = 0
    """Members in the audience."""
    deliveries: int = 0
    """Delivery rows the run would write (one per member, or per member and channel)."""
    outcomes: dict[tuple[str, str | None], int] = field(default_factory=dict)
    """Rows by ``(status, reason)``, as the ledger would record them."""
    channels: dict[str, int] = field(default_factory=dict)
    """Messages sent per channel."""
    capped_by_rule: dict[str, int] = field(default_factory=dict)
    deferred_until: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    """Per deferral reason, the first and last instant the rows would wait until."""
    samples: dict[str, list[SampleRender]] = field(default_factory=dict)
    eta: list[ChannelEta] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def not_forecastable(cls, campaign: str, kind: str, reason: str) -> Forecast:
        return cls(campaign=campaign, kind=kind, forecastable=False, reason=reason, at=None)

    def count(self, status: str, reason: str | None = None) -> int:
        """Rows with ``status`` (and ``reason``, when given)."""
        return sum(n for (s, r), n in self.outcomes.items() if s == status and reason in (None, r))

    def by_status(self, status: str) -> dict[str, int]:
        """Rows with ``status``, by reason."""
        return {r or "": n for (s, r), n in sorted(self.outcomes.items(), key=_key) if s == status}

    def to_dict(self) -> dict[str, Any]:
        """The forecast as JSON-ready values (instants in ISO 8601, UTC)."""
        return {
            "campaign": self.campaign,
            "kind": self.kind,
            "forecastable": self.forecastable,
            "reason": self.reason,
            "at": _iso(self.at),
            "audience": self.audience,
            "deliveries": self.deliveries,
            "outcomes": [
                {"status": s, "reason": r, "count": n}
                for (s, r), n in sorted(self.outcomes.items(), key=_key)
            ],
            "channels": dict(sorted(self.channels.items())),
            "suppressed": self.by_status("suppressed"),
            "deferred": {
                reason: {
                    "count": n,
                    "first_until": _iso(self.deferred_until[reason][0]),
                    "last_until": _iso(self.deferred_until[reason][1]),
                }
                for reason, n in self.by_status("deferred").items()
            },
            "failed": self.by_status("failed"),
            "capped_by_rule": dict(sorted(self.capped_by_rule.items())),
            "samples": {
                channel: [
                    {
                        "member": s.member,
                        "to": s.to,
                        "sent_at": _iso(s.sent_at),
                        "parts": s.parts,
                    }
                    for s in samples
                ]
                for channel, samples in sorted(self.samples.items())
            },
            "eta": [
                {
                    "channel": e.channel,
                    "messages": e.messages,
                    "live": e.live,
                    "rates": e.rates,
                    "starts_at": _iso(e.starts_at),
                    "finishes_at": _iso(e.finishes_at),
                    "seconds": round(e.seconds, 3),
                }
                for e in self.eta
            ],
            "notes": list(self.notes),
        }


def _key(item: tuple[tuple[str, str | None], int]) -> tuple[int, str]:
    (status, reason), _ = item
    return _STATUS_ORDER.get(status, 9), reason or ""


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None
