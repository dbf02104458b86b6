"""When an expiry reminder may go: its lead date in the member's zone, and postal drop dates.

A reminder row's payload names its expiry date (member-local) and its lead
time; its *lead date* is ``expiry_date - lead_days``, the member's own day
on which "7 days before" falls. The deliver step (:mod:`workers.compose`)
asks two things of it here:

- :func:`lead_date_wait`: a message on a channel that arrives at once
  (email, SMS, push) never goes before the lead date has begun in the
  member's time zone; it is deferred (reason ``scheduled``) to that local
  midnight. A direct-mail piece goes at once: it was planned early on purpose
  (below) so that it arrives by the lead date.
- :func:`reminder_deadline`: the instant after which the reminder is
  pointless (the first of its points expire). A frequency cap defers a
  deadline-bound message to its next free slot only when that slot comes
  before this instant (:mod:`workers.capping`).

Postal lead time
----------------
A printed piece is handed to the vendor (exported) on its *drop date*, the
lead date counted back by the program's ``postal_lead_business_days``
business days (:func:`drop_date`). Business days are Monday to Friday;
public holidays are not modelled, so a program whose post is slow around
holidays should set a longer lead time. A campaign that may send direct mail
plans, on each day, every reminder whose drop date has come
(:func:`planning_horizon`): on a Monday with 5 business days, the lead dates
of Saturday, Sunday and Monday a week later; on a weekend none beyond
Friday's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from .quiet_hours import local_midnight, resolve_zone

__all__ = [
    "POSTAL_CHANNEL",
    "drop_date",
    "lead_date",
    "lead_date_wait",
    "planning_horizon",
    "reminder_deadline",
]

#: The channel whose messages take the postal lead time to arrive.
POSTAL_CHANNEL = "direct_mail"
_DAY = timedelta(days=1)
_SATURDAY = 5


def drop_date(lead: date, business_days: int) -> date:
    """The day a printed piece for lead date ``lead`` must be exported to arrive in time.

    ``lead`` counted back by ``business_days`` Monday-to-Friday days (the lead
    date itself not counted): 5 business days before Monday 7 Dec is Monday
    30 Nov, and before Saturday 5 Dec or Sunday 6 Dec too. With 0 it is the
    lead date itself.

    Raises:
        ValueError: ``business_days`` is negative.
    """
    if business_days < 0:
        raise ValueError(f"business days must be 0 or more, not {business_days}")
    day, left = lead, business_days
    while left:
        day -= _DAY
        if day.weekday() < _SATURDAY:
            left -= 1
    return day


def planning_horizon(today: date, business_days: int) -> date:
    """The last lead date whose drop date (:func:`drop_date`) is ``today`` or earlier."""
    horizon = today
    while drop_date(horizon + _DAY, business_days) <= today:
        horizon += _DAY
    return horizon


def lead_date(payload: Mapping[str, Any]) -> date:
    """A reminder's lead date: its member-local expiry date less its lead days."""
    return date.fromisoformat(payload["expiry_date"]) - timedelta(days=int(payload["lead_days"]))


def reminder_deadline(payload: Mapping[str, Any]) -> datetime:
    """The instant the first of the reminder's points expire: a reminder after it is pointless."""
    return datetime.fromisoformat(payload["expires_at"])


def lead_date_wait(
    payload: Mapping[str, Any],
    channel: str,
    time_zone: str | None,
    default_time_zone: str,
    now: datetime,
) -> tuple[datetime, str] | None:
    """When a reminder on ``channel`` must wait for its lead date: (until, detail); else None.

    Args:
        payload: the delivery row's payload (``expiry_date``, ``lead_days``).
        channel: the channel policy chose.
        time_zone: the member's zone (None or unknown: ``default_time_zone``).
        default_time_zone: the program's zone.
        now: the current instant.
    """
    if channel == POSTAL_CHANNEL:
        return None
    zone = resolve_zone(time_zone, default_time_zone)
    lead = lead_date(payload)
    until = local_midnight(lead, zone)
    if until <= now:
        return None
    detail = f"{int(payload['lead_days'])}-day reminder waits for {lead.isoformat()} ({zone.key})"
    return until, detail
