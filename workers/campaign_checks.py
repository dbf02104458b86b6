"""Checking a campaign file before anything is stored: spec, templates, sample renders.

:func:`validate_campaign` is what ``campaigns create``, ``campaigns forecast``
and the API's ``POST /campaigns/validate`` share: parse and validate the text,
load the templates of every channel it may send on, resolve a saved segment's
name to its rule as it is now, and render each part for sample members (real
members of the segment and synthetic ones with empty fields). It reads the
store and writes nothing; a problem is raised with its place named.

:func:`rules_not_allowed` checks the other way round: stored campaigns still
running against the program as it is now, so ``loyalcast worker`` and
``loyalcast run`` can warn at start of a campaign whose segment or sequence
rules name an attribute the policy file no longer declares (its runs would
fail to plan, its sequence rows fail with ``rule_error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from segments import RuleError, audience_filter, load_segment, parse_rule
from store import Campaign, CampaignStatus, CampaignVersion, Member, utcnow
from templates import Renderer, TemplateError, load_templates

from .campaigns import CampaignFileError, CampaignSpec, Problem, parse_campaign
from .context import member_context, sample_extras
from .program import Program
from .runtime import LoadedVersion
from .yamlfile import dotted

__all__ = [
    "SAMPLE_MEMBERS",
    "ValidatedCampaign",
    "load_campaign_templates",
    "read_campaign_file",
    "rules_not_allowed",
    "validate_campaign",
]

SAMPLE_MEMBERS = 20


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
    if spec.trigger_segment is not None:
        with sessions() as session:
            try:
                load_segment(session, spec.trigger_segment, attributes=attributes)
            except LookupError:
                problem = Problem("on", f"no saved segment named {spec.trigger_segment!r}")
                raise CampaignFileError(source, [problem]) from None
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


def rules_not_allowed(sessions: sessionmaker[Session], program: Program) -> list[str]:
    """Each rule of an active or paused campaign's current version that ``program``
    no longer allows: ``campaign NAME vN: <path>: <problem>``, in name order."""
    with sessions() as session:
        rows = session.execute(
            select(Campaign.name, CampaignVersion.version, CampaignVersion.spec)
            .join(
                CampaignVersion,
                (CampaignVersion.campaign_id == Campaign.id)
                & (CampaignVersion.version == Campaign.current_version),
            )
            .where(Campaign.status.in_((CampaignStatus.ACTIVE, CampaignStatus.PAUSED)))
            .order_by(Campaign.name)
        ).all()
    found: list[str] = []
    for name, number, data in rows:
        spec = CampaignSpec.model_validate(data)
        for loc, rule in spec.rules():
            try:
                parse_rule(rule, dotted(loc), attributes=program.attributes)
            except RuleError as exc:
                found.append(f"campaign {name} v{number}: {exc}")
    return found
