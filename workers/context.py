"""The template render context for one member (see :mod:`templates` for the convention).

Besides the member, a delivery's trigger adds keys of its own
(:func:`trigger_context`, from the row's ``payload``):

- an expiry reminder: ``expiring_points`` (int, the points still unredeemed
  that expire on the date), ``expires_on`` (the member-local expiry date, a
  ``date``: format it with ``|date``), ``expires_at`` (the instant the first
  of them go) and ``days_left`` (days from the member's today to the expiry
  date when sent: the lead time, or fewer after a catch-up);
- a welcome-sequence step: ``step`` (1 for the first) and ``steps`` (how many).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from store import Member

from .campaigns import CampaignSpec
from .runtime import LoadedVersion

__all__ = ["member_context", "sample_extras", "trigger_context"]


def member_context(
    member: Member, version: LoadedVersion, default_time_zone: str
) -> dict[str, Any]:
    """What a template may read about ``member``: plain values, never the ORM object.

    A field the store has no value for is ``None`` (templates must give a
    fallback), never an empty string that would print as nothing.
    """
    name = (member.name or "").strip() or None
    time_zone = member.time_zone or default_time_zone
    return {
        "member": {
            "id": member.id,
            "external_id": member.external_id,
            "name": name,
            "first_name": name.split()[0] if name else None,
            "email": member.email,
            "phone": member.phone,
            "tier": member.tier,
            "points_balance": member.points_balance,
            "locale": member.locale,
            "time_zone": time_zone,
            "enrolled_at": member.enrolled_at,
            "purchases_count": member.purchases_count,
            "attributes": dict(member.attributes or {}),
        },
        "campaign": {"name": version.campaign_name, "category": version.spec.category},
        "locale": member.locale or "en",
        "time_zone": time_zone,
    }


def trigger_context(spec: CampaignSpec, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys a delivery's trigger adds to the context (see the module docstring)."""
    if not payload:
        return {}
    if spec.kind == "expiry_reminder":
        return {
            "expiring_points": int(payload["points"]),
            "expires_on": date.fromisoformat(payload["expiry_date"]),
            "expires_at": datetime.fromisoformat(payload["expires_at"]),
            "days_left": int(payload.get("days_left", payload["lead_days"])),
        }
    if spec.kind == "welcome_sequence" and "step" in payload:
        return {"step": int(payload["step"]) + 1, "steps": len(spec.steps or [])}
    return {}


def sample_extras(spec: CampaignSpec, template: str) -> dict[str, Any]:
    """Trigger keys with sample values, for checking templates when a campaign is created."""
    if spec.kind == "expiry_reminder":
        expires_at = datetime(2026, 12, 3, 23, 59, tzinfo=UTC)
        lead = (spec.lead_days or [7])[-1]
        payload = {
            "points": 120,
            "expiry_date": expires_at.date().isoformat(),
            "expires_at": expires_at.isoformat(),
            "lead_days": lead,
        }
        return trigger_context(spec, payload)
    if spec.kind == "welcome_sequence":
        steps = spec.steps or []
        index = next((i for i, step in enumerate(steps) if step.template == template), 0)
        return trigger_context(spec, {"step": index})
    return {}
