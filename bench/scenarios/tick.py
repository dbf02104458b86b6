"""Scenario e: what the scheduler leader's periodic work costs with every member and lot stored.

The leader ticks every ``LOYALCAST_TICK_SECONDS`` (5 s by default) and sweeps
every ``LOYALCAST_SWEEP_SECONDS``. This scenario adds the campaigns a running
program has besides a one-off broadcast: an expiry-reminder campaign (its
daily run is written by the tick's run maker for that kind, when one is
registered in :data:`workers.occurrences._MAKERS`), a welcome sequence and a
broadcast scheduled next year, then times, with the bench process as the
leader:

- the first tick (writes and claims whatever is due now, enqueues plan jobs);
- ticks with nothing new due (the steady state), and their two halves:
  ``ensure_runs`` (the run makers) and ``claim_due_runs``;
- the sweep (:func:`workers.sweeping.sweep`), over every delivery row the
  store holds (the broadcasts of scenario c, when it ran first);
- the sweep again with the scheduled broadcast in flight: one row per
  member, four in five enqueued a moment ago and one in five waiting for its
  member's local time, as during a large broadcast (written with one
  ``INSERT ... SELECT``, deleted afterwards). Nothing is due, so the figure
  is what finding nothing costs among a million open rows.

Plan jobs the tick enqueues are not run: no worker consumes this scenario's
queue, and the keys are deleted with the rest of the run's namespace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import String, case, cast, delete, func, insert, literal, select, text

from scheduler.ticks import claim_due_runs, tick
from store import CampaignRun, Delivery, DeliveryStatus, Member, utcnow
from workers import Runtime, close_broker, make_broker
from workers.catalog import create_campaign
from workers.occurrences import _MAKERS, ensure_runs
from workers.runtime import program_for
from workers.sweeping import sweep

from ..environment import BenchEnv
from ..report import ScenarioResult, median

__all__ = ["CAMPAIGNS", "run"]

CAMPAIGNS = {
    "expiry": """\
name: bench-expiry-{token}
kind: expiry_reminder
category: service
lead_days: [30, 7, 1]
min_points: 50
channels: [email, sms]
template: winter-double-points
""",
    "welcome": """\
name: bench-welcome-{token}
kind: welcome_sequence
category: marketing
steps:
  - {{after: 0m, channels: [email], template: winter-double-points}}
  - {{after: 2d, channels: [sms, email], template: winter-double-points}}
""",
    "scheduled": """\
name: bench-scheduled-{token}
kind: broadcast
category: marketing
channels: [email]
template: winter-double-points
schedule: {{at: "{year}-06-01T10:00", timezone: UTC}}
""",
}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _in_flight(env: BenchEnv, run_id: int | None) -> int:
    """Write the scheduled broadcast's rows as if it were being sent; return how many."""
    with env.engine.begin() as conn:
        run = conn.execute(
            select(CampaignRun.campaign_id, CampaignRun.campaign_version_id).where(
                CampaignRun.id == run_id
            )
        ).one()
        now = utcnow()
        waiting = Member.id % 5 == 0
        rows = select(
            ("bench-sweep-" + cast(Member.id, String)).label("dedupe_key"),
            literal(run.campaign_id).label("campaign_id"),
            literal(run.campaign_version_id).label("campaign_version_id"),
            literal(run_id).label("run_id"),
            Member.id.label("member_id"),
            literal("marketing").label("category"),
            literal("email").label("channels"),
            literal(DeliveryStatus.PENDING).label("status"),
            case((waiting, None), else_=literal(now, Delivery.enqueued_at.type)).label(
                "enqueued_at"
            ),
            case((waiting, literal(now + timedelta(hours=12), Delivery.not_before.type))).label(
                "not_before"
            ),
        )
        conn.execute(insert(Delivery).from_select(list(rows.selected_columns.keys()), rows))
        conn.execute(text("ANALYZE deliveries"))  # as autovacuum would, a broadcast this size
        count = select(func.count()).select_from(Delivery).where(Delivery.run_id == run_id)
        return int(conn.scalar(count) or 0)


def run(env: BenchEnv) -> ScenarioResult:
    """Time the first tick, steady ticks and their parts, and the sweep."""
    result = ScenarioResult(
        "tick", f"scheduler tick and sweep with {env.members:,} members and their lots"
    )
    settings = env.settings()
    program = program_for(settings)
    year = utcnow().year + 1
    created = {}
    for label, source in CAMPAIGNS.items():
        path = env.work_dir / f"bench-{label}.yaml"
        path.write_text(source.format(token=env.token, year=year))
        created[label] = create_campaign(env.sessions, path, program=program)
    broker = make_broker(settings)
    rt = Runtime(settings, broker, program=program)
    sessions = env.sessions
    try:
        first_s, claimed = _timed(lambda: tick(sessions, broker))
        result.row("first tick (one call)").add("median", first_s * 1000, "ms").add(
            "runs claimed", len(claimed), "count"
        )
        repeat = max(env.options.repeat, 5)
        parts: dict[str, Callable[[], Any]] = {
            "tick, nothing new due": lambda: tick(sessions, broker),
            "  ensure_runs (run makers)": lambda: ensure_runs(sessions, utcnow()),
            "  claim_due_runs": lambda: claim_due_runs(sessions),
            "sweep": lambda: sweep(rt),
        }
        for label, fn in parts.items():
            times = [_timed(fn)[0] for _ in range(repeat)]
            result.row(label).add("median", median(times) * 1000, "ms").add(
                "best", min(times) * 1000, "ms"
            )
        with env.engine.connect() as conn:
            deliveries = int(conn.scalar(select(func.count()).select_from(Delivery)) or 0)
        in_flight = _in_flight(env, created["scheduled"].run_id)
        try:
            times = [_timed(lambda: sweep(rt))[0] for _ in range(repeat)]
        finally:
            with env.engine.begin() as conn:
                conn.execute(delete(Delivery).where(Delivery.run_id == created["scheduled"].run_id))
        result.row(f"sweep, {in_flight:,} rows in flight").add(
            "median", median(times) * 1000, "ms"
        ).add("best", min(times) * 1000, "ms")
    finally:
        rt.close()
        close_broker(broker)
    makers = ", ".join(sorted(_MAKERS)) or "none"
    result.notes += [
        f"median and best of {repeat} calls; run makers registered: {makers};"
        f" {deliveries:,} delivery rows in the store during the sweep",
        "campaigns: an expiry reminder [30, 7, 1], a welcome sequence, a broadcast next year"
        " (plus any earlier scenario's)",
    ]
    return result
