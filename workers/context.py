"""The template render context for one member (see :mod:`templates` for the convention)."""

from __future__ import annotations

from typing import Any

from store import Member

from .runtime import LoadedVersion

__all__ = ["member_context"]


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
