"""Writing validated rows, a chunk at a time, in bulk, inside the caller's transaction.

Per chunk: one SELECT finds the members that already exist (locked ``FOR
UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already holds the write
lock), one multi-row INSERT creates the rest, and UPDATEs are sent as
executemany batches, one per set of columns given. Consents, their history and
point lots follow the same pattern, so a chunk costs a handful of round trips
whatever its size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, insert, select, update

from ..engine import insert_ignore
from ..models import Base
from ._fields import ValidRow
from ._read import MEMBER_FIELDS

__all__ = ["IN_LIST_SIZE", "write_chunk"]

T = TypeVar("T")

IN_LIST_SIZE = 500
"""Keys per ``IN (...)`` list: far below SQLite's and PostgreSQL's bound-parameter limits."""

_MEMBERS = Base.metadata.tables["members"]
_CONSENTS = Base.metadata.tables["consents"]
_CONSENT_EVENTS = Base.metadata.tables["consent_events"]
_POINT_LOTS = Base.metadata.tables["point_lots"]

# Every column an inserted member gets, so all rows of one INSERT share their keys.
_INSERT_DEFAULTS: dict[str, Any] = {name: None for name in MEMBER_FIELDS} | {
    "locale": "en",
    "points_balance": 0,
    "purchases_count": 0,
}


@dataclass(slots=True)
class _Existing:
    id: int
    attributes: dict[str, Any]


def write_chunk(
    conn: Connection, rows: Sequence[ValidRow], *, source: str, file: str, now: datetime
) -> tuple[list[int], int]:
    """Upsert ``rows`` on ``external_id`` within the transaction of ``conn``.

    Args:
        conn: a connection inside a transaction; the caller commits.
        rows: validated rows, each external_id at most once.
        source: the consent source recorded for consent changes.
        file: the file's name, for consent events' detail.
        now: the instant written as ``updated_at`` and ``occurred_at``.

    Returns:
        ``(created, updated)``: the ids of the members created, and how many
        existing members were written.
    """
    if conn.dialect.name == "postgresql":
        # A long import grows the tables within its transaction: a generic plan cached while
        # they were small (a sequential scan) would stay in use and make each chunk slower
        # than the last. Custom plans follow the tables' real size. LOCAL ends with the
        # transaction, so the pooled connection is left as it was.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    with_attributes = any(row.attributes for row in rows)
    existing = _lock_existing(conn, [row.external_id for row in rows], with_attributes)
    fresh = [row for row in rows if row.external_id not in existing]
    inserted = _insert_members(conn, fresh, now)
    raced = [row.external_id for row in fresh if row.external_id not in inserted]
    if raced:  # inserted by another writer since our SELECT (PostgreSQL): update them instead
        existing.update(_lock_existing(conn, raced, with_attributes))
    matched = [row for row in rows if row.external_id in existing]
    _update_members(conn, matched, existing, now)
    member_ids = {key: found.id for key, found in existing.items()} | inserted
    _write_consents(
        conn,
        rows,
        member_ids,
        had_members={found.id for found in existing.values()},
        source=source,
        file=file,
        now=now,
    )
    lots = [
        {
            "member_id": inserted[row.external_id],
            "points": lot.points,
            "redeemed": 0,
            "earned_at": lot.earned_at,
            "expires_at": lot.expires_at,
        }
        for row in fresh
        if row.external_id in inserted
        for lot in row.lots
    ]
    if lots:
        conn.execute(insert(_POINT_LOTS), lots)
    return sorted(inserted.values()), len(matched)


def _batches(items: Sequence[T], size: int = IN_LIST_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lock_existing(
    conn: Connection, external_ids: Sequence[str], with_attributes: bool
) -> dict[str, _Existing]:
    columns = [_MEMBERS.c.id, _MEMBERS.c.external_id]
    if with_attributes:
        columns.append(_MEMBERS.c.attributes)
    found: dict[str, _Existing] = {}
    for batch in _batches(sorted(external_ids)):
        stmt = (
            select(*columns)
            .where(_MEMBERS.c.external_id.in_(batch))
            .order_by(_MEMBERS.c.id)
            .with_for_update()
        )
        for row in conn.execute(stmt):
            attributes = dict(row[2] or {}) if with_attributes else {}
            found[row[1]] = _Existing(row[0], attributes)
    return found


def _insert_members(conn: Connection, rows: Sequence[ValidRow], now: datetime) -> dict[str, int]:
    """Insert ``rows``; the ids of those inserted (not of rows another writer inserted first)."""
    if not rows:
        return {}
    params = [
        _INSERT_DEFAULTS
        | row.values
        | {"attributes": row.attributes, "created_at": now, "updated_at": now}
        for row in rows
    ]
    stmt = insert_ignore(conn.dialect.name, _MEMBERS, None, ["external_id"]).returning(
        _MEMBERS.c.id, _MEMBERS.c.external_id
    )
    return {external_id: member_id for member_id, external_id in conn.execute(stmt, params)}


def _update_members(
    conn: Connection, rows: Sequence[ValidRow], existing: dict[str, _Existing], now: datetime
) -> None:
    """Write the given columns of existing members; attributes merge key by key."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        found = existing[row.external_id]
        params = {name: value for name, value in row.values.items() if name != "external_id"}
        if row.attributes:
            params["attributes"] = found.attributes | row.attributes
        if not params:
            continue
        params["updated_at"] = now
        params["b_id"] = found.id
        groups[frozenset(params)].append(params)
    stmt = update(_MEMBERS).where(_MEMBERS.c.id == bindparam("b_id"))
    for params_list in groups.values():
        conn.execute(stmt, params_list)


def _write_consents(
    conn: Connection,
    rows: Sequence[ValidRow],
    member_ids: dict[str, int],
    *,
    had_members: set[int],
    source: str,
    file: str,
    now: datetime,
) -> None:
    """Write each consent that differs from the stored one, and one event per change.

    An import never opts a member back in over an opt-out the member made
    themselves (a STOP reply, an unsubscribe link, a provider's report): only
    an opt-out that itself came from an import can be reversed by an import.
    """
    wanted = [
        (member_ids[row.external_id], channel, status, row.line)
        for row in rows
        for channel, status in row.consents.items()
    ]
    if not wanted:
        return
    current: dict[tuple[int, str], tuple[str, str]] = {}
    lookup = sorted({member_id for member_id, *_ in wanted if member_id in had_members})
    for batch in _batches(lookup):
        query = select(
            _CONSENTS.c.member_id, _CONSENTS.c.channel, _CONSENTS.c.status, _CONSENTS.c.source
        ).where(_CONSENTS.c.member_id.in_(batch))
        for member_id, channel, status, held_source in conn.execute(query):
            current[(member_id, channel)] = (status, held_source)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for member_id, channel, status, line in wanted:
        held = current.get((member_id, channel))
        before = held[0] if held else None
        if before == status:
            continue
        if before == "opted_out" and held is not None and not held[1].startswith("import"):
            continue  # the member's own opt-out stands
        change = {"status": status, "source": source, "updated_at": now}
        if before is None:
            inserts.append(change | {"member_id": member_id, "channel": channel})
        else:
            updates.append(change | {"b_member_id": member_id, "b_channel": channel})
        events.append(
            {
                "member_id": member_id,
                "channel": channel,
                "status": status,
                "source": source,
                "detail": f"{file}, line {line}",
                "occurred_at": now,
            }
        )
    if inserts:
        conn.execute(insert(_CONSENTS), inserts)
    if updates:
        stmt = update(_CONSENTS).where(
            _CONSENTS.c.member_id == bindparam("b_member_id"),
            _CONSENTS.c.channel == bindparam("b_channel"),
        )
        conn.execute(stmt, updates)
    if events:
        conn.execute(insert(_CONSENT_EVENTS), events)
