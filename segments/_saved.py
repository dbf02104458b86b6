"""Saved segments: a named rule in the store, a preview of its audience, and snapshots.

These helpers take the caller's :class:`~sqlalchemy.orm.Session` and never
commit: the caller owns the transaction (run :func:`snapshot` in one).

A snapshot is computed set-wise in SQL: ``DELETE ... RETURNING`` removes the
members who no longer match and ``INSERT ... SELECT ... RETURNING`` adds the
new ones, so no list of members is ever loaded; only the ids that entered or
left come back. Each statement evaluates the rule on its own; on PostgreSQL
under READ COMMITTED a member whose data changes between the two can be
reported as both left and entered (the stored set is then right as of the
second statement).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    ClauseElement,
    Executable,
    Select,
    delete,
    exists,
    func,
    insert,
    literal,
    not_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from store.models import Member, Segment, SegmentMember, utcnow

from ._compile import audience_filter
from ._errors import RuleError
from ._parse import parse_rule
from ._rules import Rule
from ._types import describe

__all__ = [
    "DEFAULT_SAMPLE",
    "SEGMENT_NAME",
    "Preview",
    "SnapshotDiff",
    "load_segment",
    "preview",
    "save_segment",
    "snapshot",
]

SEGMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
"""What a segment name looks like: the same slug as a campaign name."""
DEFAULT_SAMPLE = 10
"""How many members :func:`preview` shows by default."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Preview:
    """What a rule would select now, before anyone is sent anything."""

    count: int
    """How many members (not deleted) match."""
    sample_members: list[tuple[int, str, str | None]]
    """The first matching members by id: ``(id, external_id, name)``."""
    sql: str
    """The query, as the database receives it (values appear as placeholders)."""
    cost: str | None
    """The database's plan for it: ``EXPLAIN`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SnapshotDiff:
    """Who entered and who left a saved segment since its previous evaluation."""

    entered: list[int]
    """Member ids that match now and did not before (everyone, the first time), ascending."""
    left: list[int]
    """Member ids that matched before and do not now (deleted members leave), ascending."""
    count: int
    """How many members the segment holds now."""


def save_segment(
    session: Session,
    name: str,
    rule_data: object,
    *,
    attributes: Mapping[str, str] | None = None,
    description: str | None = None,
) -> Segment:
    """Check a rule and save it under ``name``, replacing the rule of a segment so named.

    The members of the last evaluation are kept, so the next :func:`snapshot`
    reports who entered and left because of the new rule.

    Args:
        session: the caller's session; the segment is flushed, not committed.
        name: a slug (lowercase letters, digits, ``-`` and ``_``).
        rule_data: the rule as decoded from YAML or JSON.
        attributes: the program's declared attributes (see :func:`segments.parse_rule`).
        description: for people.

    Returns:
        The saved segment.

    Raises:
        RuleError: the name is not a slug (path ``name``) or the rule is malformed.
    """
    if not isinstance(name, str) or not SEGMENT_NAME.fullmatch(name):
        raise RuleError("name", f"{describe(name)} is not a segment name (a lowercase slug)")
    parse_rule(rule_data, attributes=attributes)
    segment = session.scalars(select(Segment).where(Segment.name == name)).one_or_none()
    if segment is None:
        segment = Segment(name=name)
        session.add(segment)
    segment.rule = typing.cast(dict[str, typing.Any], rule_data)
    segment.attributes = dict(attributes or {})
    segment.description = description
    session.flush()
    return segment


def load_segment(
    session: Session, name: str, *, attributes: Mapping[str, str] | None = None
) -> tuple[Segment, Rule]:
    """The saved segment ``name`` and its rule, parsed again.

    Args:
        session: the caller's session.
        name: the segment's name.
        attributes: the program's current attribute declarations; by default
            the ones the segment was saved with.

    Raises:
        LookupError: there is no segment ``name``.
        RuleError: the saved rule no longer parses (e.g. an attribute was undeclared).
    """
    segment = session.scalars(select(Segment).where(Segment.name == name)).one_or_none()
    if segment is None:
        raise LookupError(f"no segment named {name!r}")
    declared = segment.attributes if attributes is None else attributes
    return segment, parse_rule(segment.rule, attributes=declared)


def preview(
    session: Session, rule: Rule, *, now: datetime | None = None, sample: int = DEFAULT_SAMPLE
) -> Preview:
    """How many members ``rule`` selects now, a few of them, its SQL and the database's plan.

    The count (and the SQL and plan shown) use the whole-audience shape of the
    rule; the sample, a few members in id order, the per-member one.
    """
    now = now if now is not None else utcnow()  # one instant for both
    ids = select(Member.id).where(audience_filter(rule, now=now, whole_audience=True))
    count = session.scalar(select(func.count()).select_from(ids.subquery())) or 0
    rows = session.execute(
        select(Member.id, Member.external_id, Member.name)
        .where(audience_filter(rule, now=now))
        .order_by(Member.id)
        .limit(sample)
    )
    dialect = session.get_bind().dialect
    return Preview(
        count=count,
        sample_members=[(row.id, row.external_id, row.name) for row in rows],
        sql=str(ids.compile(dialect=dialect)),
        cost=_explain(session, ids),
    )


def snapshot(session: Session, segment: Segment, *, now: datetime | None = None) -> SnapshotDiff:
    """Evaluate a saved segment, store its members and report who entered and who left.

    Args:
        session: the caller's session; run this in one transaction and commit after.
        segment: a saved segment (its rule is parsed with its saved attributes).
        now: the instant relative dates resolve against; the current UTC time if omitted.

    Returns:
        The members who entered and left since the previous evaluation, and the count now.
    """
    now = now.astimezone(UTC) if now is not None else utcnow()
    rule = parse_rule(segment.rule, attributes=segment.attributes)
    # Both statements below read every member: the whole-audience shape.
    where = audience_filter(rule, now=now, whole_audience=True)
    # Two snapshots of one segment at once would race on its rows: take its row lock first.
    session.execute(select(Segment.id).where(Segment.id == segment.id).with_for_update())
    mine = SegmentMember.segment_id == segment.id
    matching = select(Member.id).where(Member.id == SegmentMember.member_id, where)
    left = session.scalars(
        delete(SegmentMember).where(mine, not_(exists(matching))).returning(SegmentMember.member_id)
    ).all()
    already = select(SegmentMember.member_id).where(mine, SegmentMember.member_id == Member.id)
    entering = select(literal(segment.id), Member.id).where(where, not_(exists(already)))
    entered = session.scalars(
        insert(SegmentMember)
        .from_select(["segment_id", "member_id"], entering)
        .returning(SegmentMember.member_id)
    ).all()
    segment.evaluated_at = now
    session.flush()
    count = session.scalar(select(func.count()).select_from(SegmentMember).where(mine)) or 0
    return SnapshotDiff(entered=sorted(entered), left=sorted(left), count=count)


class _Explain(Executable, ClauseElement):
    """``EXPLAIN`` of a query, in the engine's own words."""

    inherit_cache = False

    def __init__(self, query: Select[typing.Any]) -> None:
        self.query = query


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: typing.Any) -> str:
    postgresql = compiler.dialect.name == "postgresql"
    prefix = "EXPLAIN (FORMAT TEXT)" if postgresql else "EXPLAIN QUERY PLAN"
    return f"{prefix} {compiler.process(element.query, **kw)}"


def _explain(session: Session, query: Select[typing.Any]) -> str | None:
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return None
    rows = session.execute(_Explain(query)).all()
    # PostgreSQL gives one line of text per row; SQLite (id, parent, notused, detail).
    return "\n".join(str(row[0] if dialect == "postgresql" else row[-1]) for row in rows)
