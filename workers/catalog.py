"""Creating campaigns and reading their progress.

:func:`create_campaign` is what ``loyalcast campaigns create`` does: parse and
validate the file, load the templates of every channel it may send on, render
each part for sample members (real members of the segment and synthetic ones
with empty fields), and only then store a new campaign version holding the
validated spec and the template sources, plus its run. A broken file or
template is refused before anything is written, with the place named (the
checks are :mod:`workers.campaign_checks`, shared with forecasts and the API).

Creating the same file again changes nothing. A changed file becomes a new
version; runs already under way keep the version they started with, and a
still-scheduled run whose instant changed is replaced.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from loyalcast.settings import Settings
from store import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    Delivery,
    Enrollment,
    RunStatus,
    insert_ignore,
    utcnow,
)

from .campaign_checks import (
    ValidatedCampaign,
    load_campaign_templates,
    read_campaign_file,
    validate_campaign,
)
from .program import Program
from .progress import provider_rates, run_progress

__all__ = [
    "CampaignStatusReport",
    "CreatedCampaign",
    "RunAlreadyStarted",
    "ValidatedCampaign",
    "campaign_status",
    "create_campaign",
    "load_campaign_templates",
    "read_campaign_file",
    "store_campaign",
    "validate_campaign",
]


@dataclass(frozen=True)
class CreatedCampaign:
    """What ``create_campaign`` stored."""

    campaign_id: int
    name: str
    version: int
    changed: bool
    run_id: int | None
    due_at: datetime | None


def create_campaign(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    template_path: Sequence[Path] = (),
    program: Program | None = None,
) -> CreatedCampaign:
    """Validate the campaign file at ``path`` and store it; see the module docstring.

    Templates are searched in ``template_path``, then ``<file's folder>/templates``,
    then the built-ins.

    Raises:
        CampaignFileError: the file, a template, or a sample render is wrong.
    """
    validated = validate_campaign(
        sessions,
        read_campaign_file(path),
        str(path),
        template_path=[*template_path, path.parent / "templates"],
        program=program,
    )
    return store_campaign(sessions, validated)


class RunAlreadyStarted(ValueError):
    """A one-off run has started planning or sending: its instant can no longer move."""


def store_campaign(
    sessions: sessionmaker[Session], validated: ValidatedCampaign, *, unstarted_only: bool = False
) -> CreatedCampaign:
    """Store a validated campaign as a new version (or nothing, when unchanged), with its run.

    With ``unstarted_only`` (moving a one-off run) nothing is stored when a run
    of the campaign has already started: its scheduled runs are cancelled
    first, so a tick claiming one at the same moment either wins (and this
    raises) or finds it cancelled.

    Raises:
        RunAlreadyStarted: ``unstarted_only`` and a run is planning, planned or completed.
    """
    spec, templates, text = validated.spec, validated.templates, validated.text
    digest = hashlib.sha256(text.encode()).hexdigest()
    spec_json = spec.model_dump(mode="json")
    # A one-off broadcast gets its run now; the other kinds get theirs from the
    # scheduler's tick (each occurrence, day, snapshot or enrollment as it comes).
    one_off = spec.kind == "broadcast" and (spec.schedule is None or not spec.schedule.recurring)
    due_at = (spec.schedule.due_at() if spec.schedule else utcnow()) if one_off else None
    occurrence = (due_at.isoformat() if spec.schedule else "once") if due_at else None
    with sessions.begin() as session:
        campaign = session.scalar(
            select(Campaign).where(Campaign.name == spec.name).with_for_update()
        )
        changed = True
        if campaign is None:
            campaign = Campaign(
                name=spec.name, kind=spec.kind, category=spec.category, current_version=1
            )
            session.add(campaign)
            session.flush()
        else:
            latest = session.scalar(
                select(CampaignVersion).where(
                    CampaignVersion.campaign_id == campaign.id,
                    CampaignVersion.version == campaign.current_version,
                )
            )
            if latest is not None and latest.digest == digest and latest.templates == templates:
                changed = False
            else:
                campaign.current_version += 1
                campaign.kind, campaign.category = spec.kind, spec.category
        if not changed:
            run_id = session.scalar(
                select(func.max(CampaignRun.id)).where(CampaignRun.campaign_id == campaign.id)
            )
            return CreatedCampaign(
                campaign.id, campaign.name, campaign.current_version, False, run_id, due_at
            )
        version = CampaignVersion(
            campaign_id=campaign.id,
            version=campaign.current_version,
            spec=spec_json,
            digest=digest,
            templates=templates,
            source=text,
        )
        session.add(version)
        session.flush()
        # Runs not yet started take the new version; a one-off run at another
        # instant belongs to the old schedule and is cancelled.
        scheduled = (CampaignRun.campaign_id == campaign.id) & (
            CampaignRun.status == RunStatus.SCHEDULED
        )
        if occurrence is not None:
            session.execute(
                update(CampaignRun)
                .where(scheduled, CampaignRun.occurrence != occurrence)
                .values(status=RunStatus.CANCELLED)
            )
        if unstarted_only:
            started = session.scalar(
                select(CampaignRun.id).where(
                    CampaignRun.campaign_id == campaign.id,
                    CampaignRun.status.in_(
                        (RunStatus.PLANNING, RunStatus.PLANNED, RunStatus.COMPLETED)
                    ),
                )
            )
            if started is not None:
                raise RunAlreadyStarted(
                    f"run {started} of campaign {spec.name!r} has already started"
                )
        session.execute(update(CampaignRun).where(scheduled).values(campaign_version_id=version.id))
        if occurrence is None:
            return CreatedCampaign(
                campaign.id, campaign.name, campaign.current_version, True, None, None
            )
        dialect = session.get_bind().dialect.name
        session.execute(
            insert_ignore(
                dialect,
                CampaignRun,
                [
                    {
                        "campaign_id": campaign.id,
                        "campaign_version_id": version.id,
                        "occurrence": occurrence,
                        "due_at": due_at,
                        "status": RunStatus.SCHEDULED,
                        "planned_through": 0,
                        "planned_count": 0,
                        "created_at": utcnow(),
                    }
                ],
                ["campaign_id", "occurrence"],
            )
        )
        run_id = session.scalar(
            select(CampaignRun.id).where(
                CampaignRun.campaign_id == campaign.id, CampaignRun.occurrence == occurrence
            )
        )
        return CreatedCampaign(
            campaign.id, campaign.name, campaign.current_version, True, run_id, due_at
        )


@dataclass(frozen=True)
class CampaignStatusReport:
    """A campaign's runs with their progress, and its deliveries counted by status and reason.

    Each run is a dict: ``id``, ``occurrence``, ``due_at``, ``status``,
    ``planned``, and its progress (:class:`~workers.progress.RunProgress`:
    ``sent``, ``open``, ``waiting``, ``last_due``, ``rate``, ``rate_source``,
    ``eta``, ``eta_basis``). Only the latest runs are listed; ``runs_total``
    counts them all.
    """

    name: str
    status: str
    version: int
    runs: list[dict[str, Any]]
    counts: list[tuple[str, str | None, int]]
    runs_total: int = 0

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.counts)


#: How many of a campaign's latest runs ``campaign_status`` lists.
STATUS_RUNS = 20


def campaign_status(
    sessions: sessionmaker[Session],
    name: str,
    *,
    rates: Mapping[str, float | None] | None = None,
    limit: int = STATUS_RUNS,
) -> CampaignStatusReport:
    """Runs with progress and ETA, and counts per status (with reasons), for campaign ``name``.

    Args:
        sessions: the store.
        name: the campaign's name.
        rates: messages per second per channel for the ETA before anything is
            sent (:func:`~workers.progress.provider_rates`); the defaults without.
        limit: how many of the latest runs to list.

    Raises:
        LookupError: no campaign has that name.
    """
    now = utcnow()
    with sessions() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == name))
        if campaign is None:
            raise LookupError(f"no campaign named {name!r}")
        latest = list(
            session.scalars(
                select(CampaignRun)
                .where(CampaignRun.campaign_id == campaign.id)
                .order_by(CampaignRun.id.desc())
                .limit(limit)
            )
        )[::-1]
        runs_total = session.scalar(
            select(func.count()).where(CampaignRun.campaign_id == campaign.id)
        )
        progress = run_progress(
            session,
            [(run.id, run.planned_count) for run in latest],
            rates=rates if rates is not None else provider_rates(Settings()),
            now=now,
            paused=campaign.status == CampaignStatus.PAUSED,
        )
        runs = [
            {
                "id": run.id,
                "occurrence": run.occurrence,
                "due_at": run.due_at,
                "status": run.status,
                "error": run.error,
                **progress[run.id].as_dict(),
            }
            for run in latest
        ]
        return CampaignStatusReport(
            campaign.name,
            campaign.status,
            campaign.current_version,
            runs,
            _ledger_counts(session, campaign.id),
            runs_total=int(runs_total or 0),
        )


def _ledger_counts(session: Session, campaign_id: int) -> list[tuple[str, str | None, int]]:
    """A campaign's rows per status and reason, ordered, found through its runs and enrollments.

    Every row belongs to a run or, for a welcome sequence, to an enrollment,
    and both are indexed by campaign; the rows' own ``campaign_id`` is not
    indexed, so filtering on it would read the whole ledger, every
    campaign's rows of every year, on each status call.
    """
    runs = select(CampaignRun.id).where(CampaignRun.campaign_id == campaign_id)
    enrollments = select(Enrollment.id).where(Enrollment.campaign_id == campaign_id)
    counts: Counter[tuple[str, str | None]] = Counter()
    for mine in (
        Delivery.run_id.in_(runs),
        and_(Delivery.run_id.is_(None), Delivery.enrollment_id.in_(enrollments)),
    ):
        for status, reason, n in session.execute(
            select(Delivery.status, Delivery.reason, func.count())
            .where(mine)
            .group_by(Delivery.status, Delivery.reason)
        ):
            counts[(status, reason)] += int(n)
    return sorted(
        ((status, reason, n) for (status, reason), n in counts.items()),
        key=lambda count: (count[0], count[1] or ""),
    )
