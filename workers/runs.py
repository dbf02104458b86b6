"""Writing a campaign run once per occurrence (used by the kinds' run makers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from store import CampaignRun, RunStatus, insert_ignore, utcnow

__all__ = ["write_run"]


def write_run(
    session: Session,
    campaign_id: int,
    version_id: int,
    occurrence: str,
    due_at: datetime,
    **values: Any,
) -> int | None:
    """Insert a scheduled run for ``occurrence`` unless it exists; its id when new, else None."""
    dialect = session.get_bind().dialect.name
    row = {
        "campaign_id": campaign_id,
        "campaign_version_id": version_id,
        "occurrence": occurrence,
        "due_at": due_at,
        "status": RunStatus.SCHEDULED,
        "planned_through": 0,
        "planned_count": 0,
        "created_at": utcnow(),
        **values,
    }
    stmt = insert_ignore(dialect, CampaignRun, [row], ["campaign_id", "occurrence"])
    return session.scalar(stmt.returning(CampaignRun.id))
