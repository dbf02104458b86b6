"""Expiry deadlines: the points each member has expiring, per local expiry date.

The expiry date of a lot
------------------------
Points expire at an instant, ``PointLot.expires_at`` (stored in UTC). The
*expiry date* a member is told about ("120 points expire on 3 Dec") is the
calendar date of that instant in the member's own time zone
(``Member.time_zone``), or in ``default_time_zone`` when the member has none
or an unknown one. A lot expiring at 2026-12-03T03:00Z is on 2 Dec for a
member in New York (22:00 the evening before) and on 3 Dec for one in Berlin:
telling the New Yorker "3 Dec" would let them lose the points the night
before the date we gave. Lots of one member whose instants fall on the same
local date are one deadline; its ``expires_at`` is the earliest of them (the
moment the first of those points go), which is what a reminder deferred by a
frequency cap must beat (DESIGN.md §5).

How it is computed
------------------
SQLite knows no time zones, and PostgreSQL's ``AT TIME ZONE`` fails the whole
query on one member's unknown zone name, so local dates are computed in
Python (``zoneinfo``), identically on both engines, in two stages:

1. SQL, :func:`expiry_candidates` (:mod:`segments._expiry_sql`): the lots with points left
   (``points > redeemed``) of members not deleted, each with its member's
   zone and its remaining points, for instants in the UTC range
   ``[start - 1 day, end + 2 days)``, ordered by member, then instant. Every
   UTC offset lies strictly within ±24 h, so that range holds every instant
   whose local date can be in ``[start, end]``, in any zone. It is a range on
   ``expires_at``: the ``(expires_at, member_id)`` index serves it, from the
   index alone on PostgreSQL, where it covers ``points`` and ``redeemed``
   (migration 0006: the table's heap pages are not read). Lots are
   not summed in SQL: Python sums per local date anyway, and a GROUP BY per
   instant cost a sort and an aggregate over nearly as many groups as lots
   (measured again with the local date computed in SQL from a table of zone
   offsets: 1.5 s on the server alone at a million members, against 0.75 s
   for this query).
2. Python, :func:`iter_expiring` (:mod:`segments._expiry_stream`): streams
   those rows as plain tuples (:func:`store.bulk.stream_tuples`: a psycopg
   server-side cursor on PostgreSQL, no SQLAlchemy row per lot), turns each
   instant into the member's local date, keeps the dates in the window, sums
   per date, drops sums below ``min_points`` and yields in member order, then
   date order. Within one member the rows come in instant order, so a date's
   rows are consecutive (local dates do not go back as instants advance,
   except across a rare backward date-line move, which is merged and
   re-sorted) and the first is the earliest. Zones are looked up once per zone
   name; a zone whose UTC offset is the same over the whole scan (most zones,
   most months) turns an instant into a date by adding that offset instead of
   converting. It holds one member's rows at a time, never the whole scan.

:func:`due_reminders` turns those deadlines into reminders for lead times
("30, 7 and 1 days before"). Nothing here opens a session: callers pass theirs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from sqlalchemy import Select
from sqlalchemy.orm import Session

from ._expiry_sql import candidates
from ._expiry_stream import ExpiringPoints, default_zone, stream

__all__ = [
    "DEFAULT_BATCH",
    "DueReminder",
    "ExpiringPoints",
    "due_reminders",
    "expiry_candidates",
    "iter_expiring",
]

#: Rows fetched per round trip while streaming.
DEFAULT_BATCH = 5000


@dataclass(frozen=True, kw_only=True, slots=True)
class DueReminder:
    """A reminder due today: its once-only key is (member, expiry date, lead days)."""

    member_id: int
    expiry_date: date
    lead_days: int
    """Which reminder this is: "``lead_days`` days before the expiry date"."""
    points: int
    expires_at: datetime
    """The deadline: the reminder is pointless after it."""


def expiry_candidates(start: date, end: date) -> Select[int, str | None, datetime, int]:
    """The lots with points left whose instants may be on a local date in a window.

    Rows are ``(member_id, time_zone, expires_at, points)``, one per lot with
    points left (``points`` is ``points - redeemed``); deleted members are left
    out. ``expires_at`` ranges over ``[start - 1 day, end + 2 days)`` in UTC,
    wider than any zone's local dates ``start..end``: :func:`iter_expiring`
    narrows it to local dates and sums per date. Ordered by member, then
    instant. ``expires_at`` comes back as a naive UTC datetime on both
    engines, without the ORM type's per-row conversion.

    Args:
        start: the first local expiry date wanted.
        end: the last local expiry date wanted (inclusive).

    Raises:
        ValueError: ``end`` is before ``start``.
    """
    return candidates([_checked_window(start, end)])


def iter_expiring(
    session: Session,
    start: date,
    end: date,
    *,
    min_points: int = 1,
    default_time_zone: str = "UTC",
    batch: int = DEFAULT_BATCH,
) -> Iterator[ExpiringPoints]:
    """Stream, per member and local expiry date in ``[start, end]``, the points expiring.

    The session's transaction must stay open while iterating: on PostgreSQL
    the rows come from a server-side cursor, which a commit closes. Closing
    the iterator early closes the cursor. On SQLite every transaction holds
    the write lock (``BEGIN IMMEDIATE``, see :mod:`store.engine`), so other
    writers wait while it streams: write the results through the same session.

    Args:
        session: where to run the query.
        start: the first local expiry date (inclusive).
        end: the last local expiry date (inclusive).
        min_points: leave out (member, date) pairs with fewer points in total.
        default_time_zone: the IANA zone of members with no (or an unknown) zone.
        batch: rows fetched per round trip.

    Returns:
        :class:`ExpiringPoints` in member order, then expiry date order.

    Raises:
        ValueError: ``end`` is before ``start``, or ``default_time_zone`` is unknown.
    """
    windows = [_checked_window(start, end)]
    default = default_zone(default_time_zone)
    _check_batch(batch)
    return stream(session, windows, lambda day: start <= day <= end, min_points, default, batch)


def due_reminders(
    session: Session,
    today: date,
    lead_days: Sequence[int],
    *,
    min_points: int = 1,
    default_time_zone: str = "UTC",
    catch_up: bool = False,
    batch: int = DEFAULT_BATCH,
) -> Iterator[DueReminder]:
    """Stream the expiry reminders due on ``today``, in member order.

    Let ``days_left = expiry_date - today`` (the member's local expiry date).

    - Normally (``catch_up=False``) the reminder with lead ``L`` is due exactly
      when ``days_left == L``: leads ``[30, 7, 1]`` remind 30, 7 and 1 days
      before, and nothing on the other days.
    - With ``catch_up=True`` (after downtime), for every expiry date with
      ``1 <= days_left <= max(lead_days)`` the one reminder due is the most
      urgent whose day has come: the smallest ``L`` with ``L >= days_left``.
      Leads ``[30, 7, 1]`` and 5 days left give the 7-day reminder (the 30-day
      one is stale, the 1-day one is not yet due); 20 days left give the
      30-day one. On a day with ``days_left`` in ``lead_days`` it is the same
      reminder as without catch-up, so catch-up may run every day: the
      once-only key (member, expiry date, lead days) makes a repeat harmless.
      A deadline first seen late (points earned 20 days before they expire)
      gets the 30-day reminder then, not only the 7-day one.

    Never a reminder on or after the expiry date: leads are at least 1.
    ``today`` is the caller's calendar day (the scheduler's), while expiry
    dates are member-local, so near the date line a 1-day reminder can be due
    after its points went: the deliver step must drop a reminder whose
    ``expires_at`` has passed ("the trigger still true", DESIGN.md §4).

    Args:
        session: where to run the query; keep its transaction open while iterating.
        today: the day the reminders go out.
        lead_days: days before the expiry date, e.g. ``[30, 7, 1]``.
        min_points: no reminder for fewer points expiring on the date.
        default_time_zone: the IANA zone of members with no (or an unknown) zone.
        catch_up: send the most urgent reminder not sent on its day, as above.
        batch: rows fetched per round trip.

    Raises:
        ValueError: ``lead_days`` is empty or holds a number below 1, or
            ``default_time_zone`` is unknown.
    """
    leads = sorted(set(lead_days))
    if not leads or any(isinstance(lead, bool) or lead < 1 for lead in leads):
        raise ValueError(f"lead_days must be whole numbers of days >= 1, not {lead_days!r}")
    default = default_zone(default_time_zone)
    _check_batch(batch)
    days_left = range(1, leads[-1] + 1) if catch_up else leads
    lead_on = {
        today + timedelta(days=left): min(lead for lead in leads if lead >= left)
        for left in days_left
    }
    return _reminders(session, [(day, day) for day in lead_on], lead_on, min_points, default, batch)


def _reminders(
    session: Session,
    windows: list[tuple[date, date]],
    lead_on: Mapping[date, int],
    min_points: int,
    default: tzinfo,
    batch: int,
) -> Iterator[DueReminder]:
    for due in stream(session, windows, lead_on.__contains__, min_points, default, batch):
        yield DueReminder(
            member_id=due.member_id,
            expiry_date=due.expiry_date,
            lead_days=lead_on[due.expiry_date],
            points=due.points,
            expires_at=due.expires_at,
        )


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")


def _checked_window(start: date, end: date) -> tuple[date, date]:
    if end < start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    return start, end
