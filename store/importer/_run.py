"""``import_members``: validate, then write, in the chosen mode."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path

import phonenumbers
from sqlalchemy import Connection, Engine

from ..models import utcnow
from ._fields import RowValidator, ValidRow
from ._model import (
    DEFAULT_CHUNK_SIZE,
    IMPORT_MODES,
    MAX_LISTED_ERRORS,
    ImportMode,
    ImportReport,
    RowError,
)
from ._read import RawRow, open_rows
from ._write import write_chunk

__all__ = ["import_members"]

_SOURCE_LENGTH = 64
"""``consents.source`` and ``consent_events.source`` are ``String(64)``."""
_SPOOL_IN_MEMORY = 16 * 1024 * 1024
"""Validated rows of an all-or-nothing import stay in memory up to this size, then go to disk."""


class _Errors:
    """The first ``limit`` errors, and a count of the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.listed: list[RowError] = []
        self.omitted = 0

    def extend(self, errors: list[RowError]) -> None:
        room = max(self.limit - len(self.listed), 0)
        self.listed.extend(errors[:room])
        self.omitted += max(len(errors) - room, 0)

    def __bool__(self) -> bool:
        return bool(self.listed) or self.omitted > 0


def import_members(
    engine: Engine,
    path: Path,
    *,
    mode: ImportMode = "all-or-nothing",
    default_region: str = "US",
    source: str | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ImportReport:
    """Import the members in ``path`` (CSV or JSON Lines), upserting on ``external_id``.

    The package docstring (:mod:`store.importer`) describes the formats, the
    fields, what an update changes and the two modes.

    Args:
        engine: the store's engine (SQLite or PostgreSQL), migrated.
        path: a ``.csv``, ``.jsonl`` or ``.ndjson`` file, UTF-8.
        mode: ``"all-or-nothing"`` (one transaction, nothing written if any
            row is bad) or ``"skip-bad"`` (good rows written chunk by chunk).
        default_region: ISO 3166 region for phone numbers written without
            ``+`` and country code, e.g. ``"US"``.
        source: the consent source recorded for consent changes; by default
            ``import:<file name>``. Cut to 64 characters.
        progress: called after each chunk with the number of rows processed
            so far (validated in all-or-nothing, which then writes every row
            in one transaction; validated and written in skip-bad).
        chunk_size: rows validated, and written, per batch.

    Returns:
        What was read, written and refused; ``report.ok`` is false when any
        row had a problem.

    Raises:
        MemberImportError: the file cannot be imported at all (unknown format,
            unreadable, not UTF-8, broken CSV quoting, a CSV header that lacks
            ``external_id`` or names unknown or repeated columns); nothing was
            written.
        ValueError: an unknown ``mode``, ``default_region`` or ``chunk_size``.
    """
    if mode not in IMPORT_MODES:
        raise ValueError(f"unknown import mode {mode!r}; use one of {', '.join(IMPORT_MODES)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be 1 or more, not {chunk_size}")
    region = default_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {default_region!r}; use an ISO code like 'US'")
    path = Path(path)
    errors = _Errors(MAX_LISTED_ERRORS)
    validate = RowValidator(path.name, region)
    source = (source or f"import:{path.name}")[:_SOURCE_LENGTH]

    def write(conn: Connection, rows: list[ValidRow], now: datetime) -> tuple[list[int], int]:
        return write_chunk(conn, rows, source=source, file=path.name, now=now)

    with open_rows(path) as raw_rows:
        chunks = _validated_chunks(raw_rows, validate, errors, chunk_size)
        if mode == "skip-bad":
            rows, created, updated = _write_each_chunk(engine, chunks, write, progress)
        else:
            rows, created, updated = _write_all_at_once(engine, chunks, write, errors, progress)
    return ImportReport(
        path=path,
        mode=mode,
        rows=rows,
        inserted=len(created),
        updated=updated,
        skipped=rows - len(created) - updated,
        errors=tuple(errors.listed),
        errors_omitted=errors.omitted,
        created_ids=tuple(created),
    )


_Chunks = Iterator[tuple[int, list[ValidRow]]]
_Write = Callable[[Connection, list[ValidRow], datetime], tuple[list[int], int]]


def _write_each_chunk(
    engine: Engine, chunks: _Chunks, write: _Write, progress: Callable[[int], None] | None
) -> tuple[int, list[int], int]:
    """skip-bad: each chunk's good rows in a transaction of their own."""
    rows = updated = 0
    created: list[int] = []
    for read, good in chunks:
        rows += read
        if good:
            with engine.begin() as conn:
                new, written = write(conn, good, utcnow())
            created.extend(new)
            updated += written
        if progress is not None:
            progress(rows)
    return rows, created, updated


def _write_all_at_once(
    engine: Engine,
    chunks: _Chunks,
    write: _Write,
    errors: _Errors,
    progress: Callable[[int], None] | None,
) -> tuple[int, list[int], int]:
    """all-or-nothing: validate every chunk (spooling rows), then write them in one transaction."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        rows = spooled = 0
        for read, good in chunks:
            rows += read
            if not errors:  # after the first error only errors matter
                pickle.dump(good, spool, protocol=pickle.HIGHEST_PROTOCOL)
                spooled += 1
            if progress is not None:
                progress(rows)
        if errors or not spooled:
            return rows, [], 0
        spool.seek(0)
        updated = 0
        created: list[int] = []
        with engine.begin() as conn:
            now = utcnow()
            for _ in range(spooled):
                # Safe to unpickle: an anonymous temporary file this call has just written.
                spooled_rows: list[ValidRow] = pickle.load(spool)  # noqa: S301
                new, written = write(conn, spooled_rows, now)
                created.extend(new)
                updated += written
        return rows, created, updated


def _validated_chunks(
    raw_rows: Iterator[RawRow], validate: RowValidator, errors: _Errors, size: int
) -> Iterator[tuple[int, list[ValidRow]]]:
    """``(rows read, valid rows)`` per ``size`` rows; problems go to ``errors``."""
    while batch := list(islice(raw_rows, size)):
        good: list[ValidRow] = []
        for raw in batch:
            result = validate(raw)
            if isinstance(result, ValidRow):
                good.append(result)
            else:
                errors.extend(result)
        yield len(batch), good
