"""What the leader does on each tick: claim due runs in the store and enqueue their plans.

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


def tick(sessions: sessionmaker[Session], broker: dramatiq.Broker) -> list[int]:
    """Claim due runs and enqueue a plan job for each; return the claimed ids."""
    claimed = claim_due_runs(sessions)
    for run_id in sorted(claimed):
        enqueue_plan(broker, run_id)
    return claimed
