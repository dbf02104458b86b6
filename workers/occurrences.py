"""Runs that come from the calendar and from the audience, not from ``campaigns create``.

A one-off broadcast gets its run when it is created. The other kinds get
theirs from the scheduler's tick, which calls :func:`ensure_runs` before it
claims due runs: each active campaign's kind has a maker that writes the runs
now due (an expiry reminder's run for today, a cron broadcast's next
occurrence, a triggered campaign's next segment snapshot). Makers write with
``INSERT ... ON CONFLICT (campaign_id, occurrence) DO NOTHING``, so a double
tick, two leaders for a moment, or a tick after downtime write each
occurrence once. A welcome sequence has no runs: its rows are written when a
member enrolls (:mod:`workers.sequences`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import (
    Campaign,
    CampaignStatus,
    CampaignVersion,
)

from .campaigns import CampaignSpec
from .program import Program
from .recurrence import make_broadcast_runs
from .reminders import make_reminder_run
from .triggers import make_trigger_runs

__all__ = ["RunMaker", "ensure_runs"]

#: ``maker(session, campaign, version_id, spec, now, program)``: write the runs now due;
#: return how many.
RunMaker = Callable[[Session, Campaign, int, CampaignSpec, datetime, Program], int]

#: The makers, per kind; a kind without one gets no runs from the tick.
_MAKERS: dict[str, RunMaker] = {
    "broadcast": make_broadcast_runs,  # cron occurrences; one-off broadcasts do nothing here
    "triggered": make_trigger_runs,
    "expiry_reminder": make_reminder_run,
}


def ensure_runs(
    sessions: sessionmaker[Session], now: datetime, program: Program | None = None
) -> int:
    """Write every run now due of every active campaign; return how many were new.

    ``program`` is the program policy (its time zone names an expiry reminder's
    day); without one, :meth:`Program.default`.
    """
    program = program or Program.default()
    with sessions() as session:
        campaigns = session.execute(
            select(Campaign, CampaignVersion.id, CampaignVersion.spec)
            .join(
                CampaignVersion,
                (CampaignVersion.campaign_id == Campaign.id)
                & (CampaignVersion.version == Campaign.current_version),
            )
            .where(Campaign.status == CampaignStatus.ACTIVE, Campaign.kind.in_(list(_MAKERS)))
            .order_by(Campaign.id)
        ).all()
        session.expunge_all()
    written = 0
    for campaign, version_id, spec_json in campaigns:
        spec = CampaignSpec.model_validate(spec_json)
        with sessions.begin() as session:
            written += _MAKERS[spec.kind](session, campaign, version_id, spec, now, program)
    return written
