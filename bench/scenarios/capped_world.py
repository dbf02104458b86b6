"""The world scenario d runs in: its policy, a quiet window nobody is in, and a send history.

Three things make the capped pass's checks real without making it wait:

- :func:`caps_policy`: the program's policy file as a deployment writes it, a
  rolling marketing cap on every channel (``marketing-weekly``, 3 per 7 days)
  and a per-channel one (``sms-daily``, 1 per member-local day), with quiet
  hours on email and SMS.
- :func:`quiet_window`: quiet hours are one minute long, placed at a
  wall-clock minute that no member's zone reaches between now and the
  horizon. Every row still goes through the check (its cost does not depend
  on the window's length: :func:`workers.quiet_hours.next_opening` resolves
  the same three intervals either way), but none is deferred for hours, so
  throughput measures the check and not the wait.
- :func:`seed_history`: ledger rows of an earlier campaign (``sent``, the way
  the deliver job leaves them), so caps bite for some members: every 20th
  member got three marketing emails in the last three days (over
  ``marketing-weekly`` everywhere), and the next one an SMS ten minutes ago
  (over ``sms-daily`` on SMS). The counters are rebuilt from these rows.

:func:`discard_run` deletes a finished run's rows, so one pass's sends never
use up the next pass's slots and every pass starts from the same table, and
:func:`clear_counters` drops the counters, so every capped run starts from
the same history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import redis
from sqlalchemy import delete, insert, select

from loyalcast.settings import Settings
from store import CampaignRun, Delivery, DeliveryStatus, Member, RunStatus
from workers.catalog import create_campaign
from workers.ledger import deliveries
from workers.program import Program
from workers.runtime import Runtime

from ..environment import BenchEnv
from ..ours import write_campaign

__all__ = [
    "CAPS",
    "HISTORY_EVERY",
    "QuietWindow",
    "caps_policy",
    "clear_counters",
    "discard_run",
    "quiet_window",
    "seed_history",
]

CAPS = """\
caps:
  - {name: marketing-weekly, scope: all, window: 7d, limit: 3, categories: [marketing]}
  - {name: sms-daily, scope: sms, window: calendar_day, limit: 1, categories: [marketing]}
"""
#: Every this many members, one has a full weekly cap and the next an SMS today.
HISTORY_EVERY = 20
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class QuietWindow:
    """A one-minute quiet window, and how many member zones the horizon sees inside it."""

    start: time
    end: time
    zones_inside: int


def quiet_window(zones: Iterable[str], now: datetime, horizon: timedelta) -> QuietWindow:
    """The first wall-clock minute no zone in ``zones`` reaches during ``[now, now + horizon]``.

    With none free (a horizon longer than the zones leave room for), the
    minute the fewest zones reach: those members' rows are then deferred,
    which the scenario reports.
    """
    reached: dict[int, set[str]] = {}
    for name in set(zones):
        zone, at = ZoneInfo(name), now
        while at <= now + horizon + _MINUTE:
            local = at.astimezone(zone)
            reached.setdefault(local.hour * 60 + local.minute, set()).add(name)
            at += _MINUTE
    best = min(range(24 * 60 - 1), key=lambda m: (len(reached.get(m, ())), m))
    start = time(best // 60, best % 60)
    end = time((best + 1) // 60, (best + 1) % 60)
    return QuietWindow(start, end, len(reached.get(best, ())))


def caps_policy(window: QuietWindow) -> str:
    """The policy file of the capped pass: :data:`CAPS` and quiet hours on email and SMS."""
    hours = f'{{start: "{window.start:%H:%M}", end: "{window.end:%H:%M}"}}'
    return f"default_time_zone: UTC\nquiet_hours: {{sms: {hours}, email: {hours}}}\n{CAPS}"


def member_zones(env: BenchEnv, program: Program) -> set[str]:
    """Every zone a member's quiet hours are read in (the program's for members without)."""
    with env.engine.connect() as conn:
        zones = {z for z in conn.scalars(select(Member.time_zone).distinct()) if z}
    return zones | {program.default_time_zone}


def seed_history(env: BenchEnv, program: Program, now: datetime) -> dict[str, int]:
    """Write the send history of the module docstring; return how many members got each part."""
    path = write_campaign(env, "history", ["email", "sms"])
    created = create_campaign(env.sessions, path, program=program)
    assert created.run_id is not None
    rows: list[dict[str, object]] = []
    with env.sessions.begin() as session:
        # The history's own run is over: the scenario's tick must not claim it.
        run = session.get(CampaignRun, created.run_id)
        assert run is not None
        run.status = RunStatus.COMPLETED
        base = {
            "campaign_id": run.campaign_id,
            "campaign_version_id": run.campaign_version_id,
            "run_id": run.id,
            "category": "marketing",
            "status": DeliveryStatus.SENT,
            "attempts": 1,
            "resend_on_ambiguous": False,
        }
        ids = list(session.scalars(select(Member.id).order_by(Member.id)))
        weekly = ids[::HISTORY_EVERY]
        daily = ids[1::HISTORY_EVERY]
        for member_id in weekly:
            for days in (1, 2, 3):
                rows.append(_sent(base, member_id, "email", now - timedelta(days=days), days))
        for member_id in daily:
            rows.append(_sent(base, member_id, "sms", now - timedelta(minutes=10), 0))
        if rows:
            session.execute(insert(deliveries), rows)
    return {"weekly cap full": len(weekly), "sms today": len(daily)}


def _sent(
    base: dict[str, object], member_id: int, channel: str, at: datetime, n: int
) -> dict[str, object]:
    return {
        **base,
        "member_id": member_id,
        "dedupe_key": f"bench-history:{member_id}:{channel}:{n}",
        "channels": channel,
        "channel": channel,
        "created_at": at,
        "updated_at": at,
        "sent_at": at,
    }


def discard_run(env: BenchEnv, run_id: int) -> None:
    """Delete a finished run's rows and vacuum the table: the next pass starts where this one did.

    Kept, one pass's sends would use up the next one's slots, and its dead row
    versions (each row is updated twice while delivered) would slow every pass
    after it: four identical open passes at 30,000 went from 3,278 to 2,767
    rows/s as they piled up, with no trend once each was deleted.
    """
    with env.engine.begin() as conn:
        conn.execute(delete(Delivery).where(Delivery.run_id == run_id))
    env.vacuum("deliveries")


def clear_counters(env: BenchEnv, namespace: str) -> int:
    """Delete the cap counters and markers under ``namespace``; return how many keys went."""
    client = redis.Redis.from_url(env.options.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:cap:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def warm_counters(env: BenchEnv, settings: Settings, page: int = 1000) -> int:
    """Rebuild every member's cap counters from the ledger, as a worker would on first use.

    Returns how many members were rebuilt.
    """
    runtime = Runtime(settings)
    try:
        counter = runtime.caps
        if counter is None:
            raise RuntimeError("the capped settings declare no caps")
        now, last, done = utc_now(), 0, 0
        while True:
            with env.engine.connect() as conn:
                zones = dict(
                    conn.execute(
                        select(Member.id, Member.time_zone)
                        .where(Member.id > last)
                        .order_by(Member.id)
                        .limit(page)
                    ).all()
                )
            if not zones:
                return done
            counter.rebuild_members(list(zones), now=now, time_zones=zones)
            last, done = max(zones), done + len(zones)
    finally:
        runtime.close()


def utc_now() -> datetime:
    """The wall clock the workers decide by (the bench never sets a test clock)."""
    return datetime.now(UTC)
