"""Creating campaigns and reading their progress.

:func:`create_campaign` is what ``loyalcast campaigns create`` does: parse and
validate the file, load the templates of every channel it may send on, render
each part for sample members (real members of the segment and synthetic ones
with empty fields), and only then store a new campaign version holding the
validated spec and the template sources, plus its run. A broken file or
template is refused before anything is written, with the place named.

Creating the same file again changes nothing. A changed file becomes a new
version; runs already under way keep the version they started with, and a
still-scheduled run whose instant changed is replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from segments import audience_filter, load_segment, parse_rule
from store import (
    Campaign,
    CampaignRun,
    CampaignVersion,
    Delivery,
    Member,
    RunStatus,
    insert_ignore,
    utcnow,
)
from templates import Renderer, TemplateError, load_templates

from .campaigns import CampaignFileError, CampaignSpec, Problem, parse_campaign
from .context import member_context, sample_extras
from .program import Program
from .runtime import LoadedVersion

__all__ = [
    "CampaignStatusReport",
    "CreatedCampaign",
    "ValidatedCampaign",
    "campaign_status",
    "create_campaign",
    "load_campaign_templates",
    "read_campaign_file",
    "store_campaign",
    "validate_campaign",
]

SAMPLE_MEMBERS = 20


@dataclass(frozen=True)
class CreatedCampaign:
    """What ``create_campaign`` stored."""

    campaign_id: int
    name: str
    version: int
    changed: bool
    run_id: int | None
    due_at: datetime | None


def _synthetic_members(attributes: dict[str, Any]) -> list[Member]:
    """A member with every field set and one with every optional field empty.

    Both carry ``attributes`` from a real sample member: program attributes
    are the program's own schema, while the empty member checks that a
    template copes with the optional fields real members leave blank.
    """
    now = utcnow()
    full = Member(
        id=0,
        external_id="sample-full",
        name="Ada Lovelace",
        email="ada@example.com",
        phone="+14155550100",
        locale="en_US",
        time_zone="America/New_York",
        tier="gold",
        points_balance=1234,
        enrolled_at=now,
        purchases_count=3,
        attributes=dict(attributes),
    )
    empty = Member(
        id=0,
        external_id="sample-empty",
        name=None,
        email=None,
        phone=None,
        locale="de_DE",
        time_zone=None,
        tier=None,
        points_balance=0,
        enrolled_at=None,
        purchases_count=0,
        attributes=dict(attributes),
    )
    return [full, empty]


def load_campaign_templates(
    spec: CampaignSpec, search_path: Sequence[Path], source: str
) -> dict[str, dict[str, dict[str, str]]]:
    """The sources of every template ``spec`` renders: ``{name: {channel: {part: source}}}``.

    Raises:
        CampaignFileError: a template or one of its parts is missing or unreadable.
    """
    templates: dict[str, dict[str, dict[str, str]]] = {}
    for name, channels in spec.messages().items():
        try:
            templates[name] = load_templates(name, channels, search_path)
        except TemplateError as exc:
            raise CampaignFileError(source, [Problem("template", str(exc))]) from None
    return templates


def _check_templates(
    spec: CampaignSpec,
    templates: dict[str, dict[str, dict[str, str]]],
    samples: Sequence[Member],
    source: str,
) -> None:
    renderer = Renderer(cache_size=64)
    problems: list[Problem] = []
    for name, sources in templates.items():
        try:
            renderer.check(name, sources)
        except TemplateError as exc:
            problem = Problem(f"template {exc.template}", _at(exc))
            raise CampaignFileError(source, [problem]) from None
    stub = LoadedVersion(0, 0, spec.name, 0, spec, templates)
    for member in samples:
        for name, channels in spec.messages().items():
            context = {**member_context(member, stub, "UTC"), **sample_extras(spec, name)}
            for channel in channels:
                try:
                    renderer.render(("check", name), name, templates[name], channel, context)
                except TemplateError as exc:
                    who = member.external_id
                    where = f"template {exc.template}"
                    problems.append(Problem(where, f"{_at(exc)} (member {who})"))
        if problems:
            break
    if problems:
        raise CampaignFileError(source, problems)


def _at(exc: TemplateError) -> str:
    return f"line {exc.line}: {exc.problem}" if exc.line else exc.problem


@dataclass(frozen=True)
class ValidatedCampaign:
    """A campaign file checked as ``campaigns create`` checks it, not stored."""

    spec: CampaignSpec
    """The spec, a saved segment's name replaced by its rule as it is now."""
    templates: dict[str, dict[str, dict[str, str]]]
    text: str


def validate_campaign(
    sessions: sessionmaker[Session],
    text: str,
    source: str,
    *,
    template_path: Sequence[Path] = (),
    program: Program | None = None,
) -> ValidatedCampaign:
    """Parse ``text``, load its templates and render them for sample members; write nothing.

    Args:
        sessions: the store (read only: saved segments, sample members).
        text: the campaign file's YAML.
        source: the file name used in error messages.
        template_path: folders of template folders, searched before the built-ins.
        program: the program policy (declared attributes).

    Raises:
        CampaignFileError: the file, a template, or a sample render is wrong.
    """
    attributes = program.attributes if program is not None else None
    spec = parse_campaign(text, source, attributes=attributes)
    templates = load_campaign_templates(spec, template_path, source)
    if isinstance(spec.segment, str):
        # A saved segment: this version keeps the rule as it is now.
        with sessions() as session:
            try:
                saved, _ = load_segment(session, spec.segment, attributes=attributes)
            except LookupError:
                problem = Problem("segment", f"no saved segment named {spec.segment!r}")
                raise CampaignFileError(source, [problem]) from None
            spec = spec.model_copy(update={"segment": saved.rule})
    rule = (
        parse_rule(spec.segment, "segment", attributes=attributes)
        if spec.segment is not None
        else None
    )
    with sessions() as session:
        samples = list(
            session.scalars(
                select(Member)
                .where(audience_filter(rule))
                .order_by(Member.id)
                .limit(SAMPLE_MEMBERS)
            )
        )
        session.expunge_all()
    sample_attributes = dict(samples[0].attributes or {}) if samples else {}
    _check_templates(spec, templates, [*samples, *_synthetic_members(sample_attributes)], source)
    return ValidatedCampaign(spec, templates, text)


def read_campaign_file(path: Path) -> str:
    """The text of the campaign file at ``path``.

    Raises:
        CampaignFileError: it cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFileError(str(path), [Problem("(file)", f"cannot read: {exc}")]) from None


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


def store_campaign(
    sessions: sessionmaker[Session], validated: ValidatedCampaign
) -> CreatedCampaign:
    """Store a validated campaign as a new version (or nothing, when unchanged), with its run."""
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
    """A campaign's runs and its deliveries counted by status and reason."""

    name: str
    status: str
    version: int
    runs: list[dict[str, Any]]
    counts: list[tuple[str, str | None, int]]

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.counts)


def campaign_status(sessions: sessionmaker[Session], name: str) -> CampaignStatusReport:
    """Counts per status (with reasons) for campaign ``name``.

    Raises:
        LookupError: no campaign has that name.
    """
    with sessions() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.name == name))
        if campaign is None:
            raise LookupError(f"no campaign named {name!r}")
        runs = [
            {
                "id": run.id,
                "occurrence": run.occurrence,
                "due_at": run.due_at,
                "status": run.status,
                "planned": run.planned_count,
            }
            for run in session.scalars(
                select(CampaignRun)
                .where(CampaignRun.campaign_id == campaign.id)
                .order_by(CampaignRun.id)
            )
        ]
        counts = [
            (status, reason, int(n))
            for status, reason, n in session.execute(
                select(Delivery.status, Delivery.reason, func.count())
                .where(Delivery.campaign_id == campaign.id)
                .group_by(Delivery.status, Delivery.reason)
                .order_by(Delivery.status, Delivery.reason)
            ).all()
        ]
        return CampaignStatusReport(
            campaign.name, campaign.status, campaign.current_version, runs, counts
        )
