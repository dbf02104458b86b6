"""A welcome sequence's send-time check: is the member still in it, does the step apply?

Registered as the ``welcome_sequence`` recheck (:mod:`workers.rechecks`), it
runs once per deliver batch, in a transaction of its own, just before policy
and rendering. For the batch's sequence rows:

1. The member leaves the sequence when they are deleted (reason
   ``member_deleted``), have opted out of every channel the sequence uses
   (``opted_out``), or match its ``exit_when`` rule (``exit_when``). The
   enrollment becomes ``exited`` with that reason, and every open row of it,
   in this batch or waiting for a later step, is suppressed with reason
   ``sequence_exit``: nothing more of the sequence is sent.
2. A step whose ``only_if`` rule the member does not match, or whose
   ``unless`` rule they do, is suppressed with reason ``step_condition``; the
   sequence goes on with its next step.
3. A rule that no longer parses against the program (its policy file dropped
   or retyped an attribute the rule names since the campaign was created)
   fails that campaign version's rows in the batch, reason ``rule_error``,
   the detail naming the campaign and the rule's problem; nothing is sent on
   a rule that cannot be checked, and the rest of the batch goes on. Once the
   program or the campaign is fixed, ``loyalcast deliveries retry --campaign
   NAME --reason rule_error`` sends them again.

Rules are evaluated in SQL, one query per rule for all the batch's members
(values are bound parameters), with the same compiler as segments, so a step
condition means exactly what the same rule means as a segment. Exits are
noticed when a step falls due: a member who opts out of everything on day 1 of
a sequence whose next step is on day 7 is marked ``exited`` on day 7, and sent
nothing in between.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from segments import Rule, RuleError, parse_rule
from store import (
    ConsentStatus,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Member,
)
from store.bulk import unindexed

from .campaigns import CampaignSpec
from .compose import Closed
from .ledger import OPEN
from .policy import ConsentState
from .rule_checks import RULE_ERROR, matching, rule_error_rows
from .runtime import Runtime

__all__ = [
    "EXIT_REASON",
    "RULE_ERROR",
    "STEP_REASON",
    "check_sequence_rows",
    "sequence_channels",
]

#: The reason on rows suppressed because their member left the sequence.
EXIT_REASON = "sequence_exit"
#: The reason on a step skipped by its ``only_if`` / ``unless``.
STEP_REASON = "step_condition"
_EXIT_DETAIL = {
    "member_deleted": "left the sequence: member deleted",
    "opted_out": "left the sequence: opted out of every channel it uses",
    "exit_when": "left the sequence: matched its exit_when rule",
}


def sequence_channels(spec: CampaignSpec) -> list[str]:
    """Every channel any step of the sequence may send on."""
    found: list[str] = []
    for step in spec.steps or []:
        found.extend(c for c in spec.step_channels(step) if c not in found)
    return found


def check_sequence_rows(
    session: Session,
    rt: Runtime,
    rows: Sequence[Delivery],
    members: Mapping[int, Member],
    consents: Mapping[int, Mapping[str, ConsentState]],
    now: datetime,
) -> list[Closed]:
    """The rows of ``rows`` that end here (see the module docstring); writes exits."""
    rows = [row for row in rows if row.enrollment_id is not None]
    if not rows:
        return []
    enrollments = {
        e.id: e
        for e in session.scalars(
            select(Enrollment).where(Enrollment.id.in_({row.enrollment_id for row in rows}))
        )
    }
    closed: list[Closed] = []
    exits: dict[int, str] = {}  # enrollment id -> exit reason
    by_version: dict[int, list[Delivery]] = defaultdict(list)
    for row in rows:
        enrollment = enrollments.get(row.enrollment_id or 0)
        if enrollment is not None and enrollment.status == EnrollmentStatus.EXITED:
            reason = enrollment.exit_reason or "exited"
            detail = _EXIT_DETAIL.get(reason, f"left the sequence: {reason}")
            closed.append(Closed(row.id, DeliveryStatus.SUPPRESSED, EXIT_REASON, detail))
        else:
            by_version[row.campaign_version_id].append(row)

    for version_id, version_rows in by_version.items():
        version = rt.version(version_id)
        spec = version.spec
        try:
            rules = _Rules.parse(spec, rt.program.attributes)
        except RuleError as exc:
            closed.extend(rule_error_rows(version, version_rows, exc))
            continue
        channels = sequence_channels(spec)
        exiting: set[int] = set()
        if rules.exit_when is not None:
            exiting = matching(session, rules.exit_when, {r.member_id for r in version_rows}, now)
        for row in version_rows:
            member = members.get(row.member_id)
            if member is None or member.deleted_at is not None:
                exits[row.enrollment_id or 0] = "member_deleted"
            elif _opted_out_of_all(consents.get(row.member_id, {}), channels):
                exits[row.enrollment_id or 0] = "opted_out"
            elif row.member_id in exiting:
                exits[row.enrollment_id or 0] = "exit_when"
        remaining = [row for row in version_rows if row.enrollment_id not in exits]
        closed.extend(_skipped_steps(session, rules, len(spec.steps or []), remaining, now))

    for row in rows:
        if row.enrollment_id in exits:
            detail = _EXIT_DETAIL[exits[row.enrollment_id]]
            closed.append(Closed(row.id, DeliveryStatus.SUPPRESSED, EXIT_REASON, detail))
    _write_exits(session, exits, now)
    return closed


def _opted_out_of_all(consents: Mapping[str, ConsentState], channels: Iterable[str]) -> bool:
    names = list(channels)
    return bool(names) and all(
        (consent := consents.get(channel)) is not None and consent.status == ConsentStatus.OPTED_OUT
        for channel in names
    )


@dataclass(frozen=True)
class _Rules:
    """A sequence version's rules, parsed against the program's attributes of today."""

    exit_when: Rule | None
    only_if: dict[int, Rule]
    """By step index, for the steps that have one."""
    unless: dict[int, Rule]

    @classmethod
    def parse(cls, spec: CampaignSpec, attributes: Mapping[str, str]) -> _Rules:
        """Every rule of ``spec``; :class:`RuleError` names the first that does not parse."""

        def parsed(kind: str) -> dict[int, Rule]:
            return {
                index: parse_rule(rule, f"steps[{index}].{kind}", attributes=attributes)
                for index, step in enumerate(spec.steps or [])
                if (rule := getattr(step, kind)) is not None
            }

        exit_when = (
            parse_rule(spec.exit_when, "exit_when", attributes=attributes)
            if spec.exit_when is not None
            else None
        )
        return cls(exit_when, parsed("only_if"), parsed("unless"))


def _skipped_steps(
    session: Session, rules: _Rules, steps: int, rows: list[Delivery], now: datetime
) -> list[Closed]:
    """The rows whose step's ``only_if`` fails or ``unless`` holds."""
    by_step: dict[int, list[Delivery]] = defaultdict(list)
    for row in rows:
        index = (row.payload or {}).get("step")
        if index is not None and 0 <= int(index) < steps:
            by_step[int(index)].append(row)
    closed: list[Closed] = []
    for index, step_rows in sorted(by_step.items()):
        member_ids = {row.member_id for row in step_rows}
        skip: dict[int, str] = {}
        if index in rules.only_if:
            held = matching(session, rules.only_if[index], member_ids, now)
            for member_id in member_ids - held:
                skip[member_id] = f"step {index + 1} skipped: its only_if rule did not hold"
        if index in rules.unless:
            for member_id in matching(session, rules.unless[index], member_ids, now):
                skip.setdefault(member_id, f"step {index + 1} skipped: its unless rule held")
        closed.extend(
            Closed(row.id, DeliveryStatus.SUPPRESSED, STEP_REASON, skip[row.member_id])
            for row in step_rows
            if row.member_id in skip
        )
    return closed


def _write_exits(session: Session, exits: Mapping[int, str], now: datetime) -> None:
    """End each enrollment with its reason and suppress every open row it still has."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for enrollment_id, reason in exits.items():
        by_reason[reason].append(enrollment_id)
    for reason, ids in sorted(by_reason.items()):
        session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(ids), Enrollment.status == EnrollmentStatus.ACTIVE)
            .execution_options(synchronize_session=False)
            .values(status=EnrollmentStatus.EXITED, ended_at=now, exit_reason=reason)
        )
        session.execute(
            update(Delivery)
            # By enrollment, never by status: see store.bulk.unindexed.
            .where(Delivery.enrollment_id.in_(ids), unindexed(Delivery.status).in_(OPEN))
            .execution_options(synchronize_session=False)
            .values(
                status=DeliveryStatus.SUPPRESSED,
                reason=EXIT_REASON,
                detail=_EXIT_DETAIL[reason],
                updated_at=now,
            )
        )
