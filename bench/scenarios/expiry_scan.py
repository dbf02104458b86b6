"""Scenario b: the expiry-deadline scan for the next 30 days.

Two reads of :mod:`segments.expiry`, each streamed through one session as the
product reads them:

- ``iter_expiring(today, today + 30 days)``: every member's points expiring
  per member-local date in the window (the scan the issue names);
- ``due_reminders(today, [30, 7, 1])``: the reminders due today, which is what
  an expiry-reminder campaign's daily run plans from.

Each is timed ``--repeat`` times after one untimed warm-up; the median and the
fastest are reported, with the rows yielded (member and date pairs) and the
lots table's size, which is what the scan works through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from segments import due_reminders, iter_expiring
from store import PointLot, utcnow

from ..environment import BenchEnv
from ..report import ScenarioResult, median

__all__ = ["run"]

WINDOW_DAYS = 30
LEADS = (30, 7, 1)


def _timed(env: BenchEnv, scan: Callable[[Session], Iterator[Any]]) -> tuple[float, int, int]:
    """(seconds, rows yielded, distinct members) of one full scan."""
    with env.sessions() as session, session.begin():
        started = time.perf_counter()
        rows = 0
        members: set[int] = set()
        for item in scan(session):
            rows += 1
            members.add(item.member_id)
        return time.perf_counter() - started, rows, len(members)


def run(env: BenchEnv) -> ScenarioResult:
    """Time the 30-day expiry scan and today's due reminders."""
    result = ScenarioResult("expiry", f"expiry-deadline scan over {env.members:,} members")
    today = utcnow().date()
    end = today + timedelta(days=WINDOW_DAYS)
    with env.engine.connect() as conn:
        lots = int(conn.scalar(select(func.count()).select_from(PointLot)) or 0)
    scans: dict[str, Callable[[Session], Iterator[Any]]] = {
        f"iter_expiring next {WINDOW_DAYS} days": lambda s: iter_expiring(s, today, end),
        f"due_reminders {list(LEADS)}": lambda s: due_reminders(s, today, LEADS),
    }
    for label, scan in scans.items():
        _timed(env, scan)  # warm-up
        runs = [_timed(env, scan) for _ in range(env.options.repeat)]
        if len({(r, m) for _, r, m in runs}) != 1:
            raise AssertionError(f"{label}: repeated scans disagree: {runs}")
        seconds = median(t for t, _, _ in runs)
        _, rows, members = runs[0]
        row = result.row(label)
        row.add("deadlines", rows, "count")
        row.add("members", members, "count")
        row.add("median", seconds, "s")
        row.add("best", min(t for t, _, _ in runs), "s")
        row.add("deadlines/s", rows / seconds if seconds else 0.0, "rows/s")
    result.notes.append(
        f"{lots:,} point lots; median and best of {env.options.repeat} runs after one warm-up;"
        " target: the 30-day scan < 2 s at 1M members"
    )
    return result
