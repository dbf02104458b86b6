"""Welcome sequences: enrolling members, and knowing when a sequence is over.

A member is enrolled by an event: ``POST /events/enrollment`` on the API, the
``enroll`` message on the ``events`` queue (:mod:`workers.enrollment_events`),
``loyalcast members enroll``, or being created by ``loyalcast members import``.
:func:`enroll` then, for each active ``welcome_sequence`` campaign (or the one
named) and each eligible member (not deleted, in the campaign's ``segment``),
in one transaction per chunk of members:

- creates the :class:`~store.Enrollment` (cycle 1; see "Re-enrolling");
- writes every step's delivery row at once: key ``sequence:<enrollment>:<step>``
  (plus ``:<channel>`` for ``channels: all``), ``payload {"step": i}``, due at
  ``enrolled_at + after``: ``deferred`` (reason ``scheduled``) until then, or
  ``pending`` when already due, and a deliver job enqueued after the commit.

So a sequence's state is in the store, never parked in the broker: the
sweeper enqueues each step when its ``not_before`` comes, and the deliver job
checks just before sending that the member is still in the sequence and that
the step's ``only_if`` / ``unless`` hold (:mod:`workers.sequence_checks`).

Once only: the enrollment's unique (campaign, member, cycle) and the rows'
unique dedupe keys are written with ``INSERT ... ON CONFLICT DO NOTHING``, so
a retried event, or two enrollments of one member at the same moment, enroll
once; the one that loses the race reports the member as already active.

Re-enrolling: a member whose enrollment is active gets nothing new. One whose
sequence ended (finished, or exited early) starts it again as cycle 2, 3, ...
(new keys) only when the campaign says ``restart: true``; otherwise nothing.

Finished: an active enrollment none of whose rows is open any more (every
step sent, failed or skipped) becomes ``finished``, on each sweep and, for
the members it is asked about, in :func:`enroll` itself, so a restart never
waits for a sweep (:mod:`workers.sequence_steps` writes the rows and decides this).

An enrollment keeps the campaign version it started with: an edited campaign
applies to members enrolled after the edit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import dramatiq
import structlog
from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session, sessionmaker

from segments import Rule, RuleError, audience_filter, parse_rule
from store import (
    Campaign,
    CampaignStatus,
    CampaignVersion,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Member,
    utcnow,
)
from store.bulk import insert_ignore_many

from .campaigns import CampaignSpec
from .jobs import chunked, enqueue_deliver
from .sequence_steps import (
    SequenceVersion,
    finish,
    finish_enrollments,
    sequence_key,
    step_rows,
)

__all__ = [
    "CampaignNotEnrollable",
    "EnrollResult",
    "Enrolled",
    "NotEnrolled",
    "SequenceRuleNotAllowed",
    "UnknownCampaign",
    "UnknownMembers",
    "enroll",
    "finish_enrollments",
    "sequence_key",
]

log = structlog.get_logger(__name__)

#: Members per transaction: a few statements each, whatever the chunk's size.
ENROLL_CHUNK = 500
KIND = "welcome_sequence"


class UnknownMembers(LookupError):
    """Members named that the store does not have; nothing was enrolled."""

    def __init__(self, unknown: Collection[str | int]) -> None:
        self.unknown = sorted(unknown, key=str)
        shown = ", ".join(repr(u) for u in self.unknown[:10])
        more = f" and {len(self.unknown) - 10} more" if len(self.unknown) > 10 else ""
        super().__init__(f"no member with external id {shown}{more}")


class UnknownCampaign(LookupError):
    """The campaign named does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no campaign named {name!r}")


class CampaignNotEnrollable(ValueError):
    """The campaign named is not a welcome sequence, or is paused or cancelled."""

    def __init__(self, name: str, problem: str, *, inactive: bool) -> None:
        self.name = name
        self.inactive = inactive
        super().__init__(f"campaign {name!r} {problem}")


class SequenceRuleNotAllowed(ValueError):
    """A welcome sequence's ``segment`` names an attribute the program no longer declares.

    Raised before anyone is enrolled in any sequence: declare the attribute
    again (and restart the workers) or update the campaign, then enroll again
    (enrolling is safe to repeat).
    """

    def __init__(self, name: str, error: RuleError) -> None:
        self.name = name
        self.error = error
        super().__init__(
            f"campaign {name!r}: {error}; the program no longer allows this rule "
            "(declare the attribute again, or update the campaign)"
        )


@dataclass(frozen=True)
class Enrolled:
    """A member who started a sequence."""

    campaign: str
    member_id: int
    external_id: str
    enrollment_id: int
    cycle: int


@dataclass(frozen=True)
class NotEnrolled:
    """A member who did not start a sequence, and why.

    ``reason``: ``active`` (already in it), ``finished`` or ``exited`` (it
    ended and the campaign does not say ``restart: true``), ``not_in_segment``
    or ``deleted``.
    """

    campaign: str
    member_id: int
    external_id: str
    reason: str


@dataclass
class EnrollResult:
    """What :func:`enroll` did."""

    enrolled: list[Enrolled] = field(default_factory=list)
    skipped: list[NotEnrolled] = field(default_factory=list)
    due_now: list[int] = field(default_factory=list)
    """Delivery rows already due (``pending``): enqueued when a broker was given."""


def enroll(
    sessions: sessionmaker[Session],
    members: Collection[int] | Collection[str],
    *,
    source: str,
    campaign: str | None = None,
    at: datetime | None = None,
    broker: dramatiq.Broker | None = None,
    attributes: Mapping[str, str] | None = None,
) -> EnrollResult:
    """Enroll ``members`` in every active welcome sequence, or in ``campaign``.

    Args:
        sessions: sessions on the store.
        members: member ids (ints) or external ids (strings).
        source: where the enrollment came from (``api``, ``import``, ``event``,
            ``cli``); at most 32 characters.
        campaign: only this campaign (it must be an active welcome sequence).
        at: when the member enrolled (default: now); steps are due from it.
        broker: where to enqueue deliver jobs for steps already due; without
            one the sweeper enqueues them on its next pass.
        attributes: the program's declared attributes (for segment rules).

    Raises:
        UnknownMembers: a member named does not exist; nothing was enrolled.
        UnknownCampaign: ``campaign`` does not exist.
        CampaignNotEnrollable: ``campaign`` is not an active welcome sequence.
        SequenceRuleNotAllowed: a sequence's segment names an attribute
            ``attributes`` does not declare; nothing was enrolled.
        ValueError: ``at`` is naive or in the future, ``source`` too long.
    """
    now = utcnow()
    enrolled_at = now if at is None else at
    if enrolled_at.utcoffset() is None or enrolled_at > now:
        raise ValueError(f"at must be an aware instant not in the future, got {at!r}")
    if not source or len(source) > 32:
        raise ValueError("source must be 1 to 32 characters")
    sequences = _sequences(sessions, campaign)
    rules = _rules(sequences, attributes)
    names = _resolve(sessions, members)
    result = EnrollResult()
    for sequence, rule in zip(sequences, rules, strict=True):
        for chunk in chunked(sorted(names), ENROLL_CHUNK):
            with sessions.begin() as session:
                due = _enroll_chunk(
                    session, sequence, rule, chunk, names, enrolled_at, now, source, broker, result
                )
            result.due_now.extend(due)
            if broker is not None:
                enqueue_deliver(broker, due)
    if result.enrolled:
        log.info(
            "members enrolled",
            source=source,
            enrolled=len(result.enrolled),
            skipped=len(result.skipped),
        )
    return result


def _rules(
    sequences: list[SequenceVersion], attributes: Mapping[str, str] | None
) -> list[Rule | None]:
    """Each sequence's segment rule, all parsed before anyone is enrolled."""
    rules: list[Rule | None] = []
    for sequence in sequences:
        try:
            rules.append(
                parse_rule(sequence.spec.segment, "segment", attributes=attributes)
                if sequence.spec.segment is not None
                else None
            )
        except RuleError as exc:
            raise SequenceRuleNotAllowed(sequence.name, exc) from None
    return rules


def _sequences(sessions: sessionmaker[Session], name: str | None) -> list[SequenceVersion]:
    query = select(Campaign, CampaignVersion.id, CampaignVersion.spec).join(
        CampaignVersion,
        (CampaignVersion.campaign_id == Campaign.id)
        & (CampaignVersion.version == Campaign.current_version),
    )
    if name is None:
        query = query.where(Campaign.kind == KIND, Campaign.status == CampaignStatus.ACTIVE)
    else:
        query = query.where(Campaign.name == name)
    with sessions() as session:
        found = session.execute(query.order_by(Campaign.id)).all()
    if name is not None:
        if not found:
            raise UnknownCampaign(name)
        campaign = found[0][0]
        if campaign.kind != KIND:
            problem = f"is a {campaign.kind} campaign, not a welcome sequence"
            raise CampaignNotEnrollable(name, problem, inactive=False)
        if campaign.status != CampaignStatus.ACTIVE:
            problem = f"is {campaign.status}: it takes no enrollments"
            raise CampaignNotEnrollable(name, problem, inactive=True)
    return [
        SequenceVersion(c.id, c.name, version_id, CampaignSpec.model_validate(spec))
        for c, version_id, spec in found
    ]


def _resolve(
    sessions: sessionmaker[Session], members: Collection[int] | Collection[str]
) -> dict[int, str]:
    """``{member id: external id}`` for ``members``; every one must exist."""
    wanted: set[int | str] = set(members)
    if not all(isinstance(m, str) for m in wanted) and not all(
        isinstance(m, int) and not isinstance(m, bool) for m in wanted
    ):
        raise TypeError("members must be all member ids (int) or all external ids (str)")
    column = Member.external_id if all(isinstance(m, str) for m in wanted) else Member.id
    names: dict[int, str] = {}
    found: set[int | str] = set()
    with sessions() as session:
        for chunk in chunked(sorted(wanted, key=str), ENROLL_CHUNK):
            for member_id, external_id in session.execute(
                select(Member.id, Member.external_id).where(column.in_(chunk))
            ):
                names[member_id] = external_id
                found.add(external_id if column is Member.external_id else member_id)
    if missing := wanted - found:
        raise UnknownMembers(missing)
    return names


def _enroll_chunk(
    session: Session,
    sequence: SequenceVersion,
    rule: Rule | None,
    chunk: list[int],
    names: Mapping[int, str],
    enrolled_at: datetime,
    now: datetime,
    source: str,
    broker: dramatiq.Broker | None,
    result: EnrollResult,
) -> list[int]:
    """Enroll one chunk of members in one sequence; return the ids of rows due now."""
    spec = sequence.spec
    if session.get_bind().dialect.name == "postgresql":
        # As in the member importer: a large enrollment grows these tables within one call,
        # and a generic plan cached while they were small (a scan) would stay in use.
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))

    def skip(member_id: int, reason: str) -> None:
        result.skipped.append(NotEnrolled(sequence.name, member_id, names[member_id], reason))

    eligible = set(
        session.scalars(
            select(Member.id).where(Member.id.in_(chunk), audience_filter(rule, now=now))
        )
    )
    if len(eligible) < len(chunk):
        deleted = set(
            session.scalars(
                select(Member.id).where(Member.id.in_(chunk), Member.deleted_at.is_not(None))
            )
        )
        for member_id in chunk:
            if member_id not in eligible:
                skip(member_id, "deleted" if member_id in deleted else "not_in_segment")
    latest: dict[int, tuple[int, int, str]] = {}  # member -> (enrollment id, cycle, status)
    for enrollment_id, member_id, cycle, status in session.execute(
        select(Enrollment.id, Enrollment.member_id, Enrollment.cycle, Enrollment.status).where(
            Enrollment.campaign_id == sequence.campaign_id, Enrollment.member_id.in_(eligible)
        )
    ):
        if member_id not in latest or cycle > latest[member_id][1]:
            latest[member_id] = (enrollment_id, cycle, status)
    active = [e for e, _, status in latest.values() if status == EnrollmentStatus.ACTIVE]
    over = set(finish(session, now, active)) if active else set()

    wanted: list[dict[str, Any]] = []
    for member_id in sorted(eligible):
        enrollment_id, cycle, status = latest.get(member_id, (0, 0, ""))
        if enrollment_id in over:
            status = EnrollmentStatus.FINISHED
        if not enrollment_id or (spec.restart and status != EnrollmentStatus.ACTIVE):
            wanted.append(
                {
                    "campaign_id": sequence.campaign_id,
                    "campaign_version_id": sequence.version_id,
                    "member_id": member_id,
                    "cycle": cycle + 1,
                    "status": EnrollmentStatus.ACTIVE,
                    "enrolled_at": enrolled_at,
                    "source": source,
                    "created_at": now,
                }
            )
        else:
            skip(member_id, status)
    if not wanted:
        return []
    enrollments = cast(Table, Enrollment.__table__)
    inserted = insert_ignore_many(
        session,
        enrollments,
        wanted,
        ["campaign_id", "member_id", "cycle"],
        [enrollments.c.id, enrollments.c.member_id, enrollments.c.cycle],
    )
    won = {member_id for _, member_id, _ in inserted}
    for row in wanted:
        if row["member_id"] not in won:  # a concurrent enrollment of the same member won
            skip(row["member_id"], EnrollmentStatus.ACTIVE)
    rows: list[dict[str, Any]] = []
    for enrollment_id, member_id, cycle in sorted(inserted):
        result.enrolled.append(
            Enrolled(sequence.name, member_id, names[member_id], enrollment_id, cycle)
        )
        rows.extend(
            step_rows(
                sequence, enrollment_id, member_id, enrolled_at, now, queued=broker is not None
            )
        )
    due: list[int] = []
    if not rows:
        return []
    deliveries = cast(Table, Delivery.__table__)
    returning = [deliveries.c.id, deliveries.c.status]
    for delivery_id, status in insert_ignore_many(
        session, deliveries, rows, ["dedupe_key"], returning
    ):
        if status == DeliveryStatus.PENDING:
            due.append(delivery_id)
    return sorted(due)
