"""What the leader does on each tick: write the runs now due, claim them, enqueue their plans.

Runs of recurring kinds (expiry reminders' days, cron occurrences, segment
triggers) are written first by :func:`workers.occurrences.ensure_runs`.

A claim is one conditional UPDATE (``status = 'scheduled' AND due_at <= now``
-> ``planning``) returning the ids it changed. Two schedulers ticking at the
same instant cannot both claim a run: PostgreSQL re-checks the WHERE on the
row it waited for, and SQLite runs one writer at a time. A crash between the
claim and the enqueue is repaired by the sweeper, which re-plans runs left in
``planning`` without progress.
"""

from __future__ import annotations

import dramatiq
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from store import Campaign, CampaignRun, CampaignStatus, RunStatus, utcnow
from workers.jobs import enqueue_plan
from workers.occurrences import ensure_runs
from workers.program import Program

__all__ = ["claim_due_runs", "tick"]


def claim_due_runs(sessions: sessionmaker[Session]) -> list[int]:
    """Move every due, scheduled run of an active campaign to ``planning``; return their ids."""
    now = utcnow()
    active = select(Campaign.id).where(Campaign.status == CampaignStatus.ACTIVE)
    with sessions.begin() as session:
        return list(
            session.scalars(
                update(CampaignRun)
                .where(
                    CampaignRun.status == RunStatus.SCHEDULED,
                    CampaignRun.due_at <= now,
                    CampaignRun.campaign_id.in_(active),
                )
                .values(status=RunStatus.PLANNING, claimed_at=now)
                .returning(CampaignRun.id)
            )
        )


def tick(
    sessions: sessionmaker[Session], broker: dramatiq.Broker, program: Program | None = None
) -> list[int]:
    """Write the runs the calendar now calls for, claim due runs and enqueue a plan job
    for each; return the claimed ids."""
    ensure_runs(sessions, utcnow(), program)
    claimed = claim_due_runs(sessions)
    for run_id in sorted(claimed):
        enqueue_plan(broker, run_id)
    return claimed
