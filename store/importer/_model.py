"""The importer's value types, its named defaults and its one error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "IMPORT_MODES",
    "MAX_LISTED_ERRORS",
    "ImportMode",
    "ImportReport",
    "MemberImportError",
    "RowError",
]

ImportMode = Literal["all-or-nothing", "skip-bad"]
"""How a file with bad rows is imported; the package docstring describes both."""

IMPORT_MODES: tuple[ImportMode, ...] = ("all-or-nothing", "skip-bad")
DEFAULT_CHUNK_SIZE = 1000
"""Rows validated, and written, per batch."""
MAX_LISTED_ERRORS = 100
"""Errors kept in a report; the rest are only counted (``ImportReport.errors_omitted``)."""


@dataclass(frozen=True, kw_only=True)
class RowError:
    """One problem in an import file: where it is (line, field) and what is wrong.

    Attributes:
        file: the file's name (not its whole path), for messages.
        line: the physical line in the file where the row starts (a CSV's
            header is line 1); 0 when the problem is with the whole file.
        field: the column or JSON key at fault (``phone``, ``attributes.color``,
            ``lots[0].points``); ``None`` when it is the row or file as a whole.
        problem: what is wrong, for people.
    """

    file: str
    line: int
    field: str | None
    problem: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f", line {self.line}"
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True, kw_only=True)
class ImportReport:
    """What an import did.

    Attributes:
        path: the file imported.
        mode: the mode it was imported in.
        rows: data rows read (blank lines are not rows).
        inserted: members created.
        updated: existing members the file named and that were written (even
            when no value differed).
        skipped: rows not written: the bad ones in ``skip-bad`` mode, every
            row when ``all-or-nothing`` found an error.
        errors: the first :data:`MAX_LISTED_ERRORS` problems, in file order.
        errors_omitted: how many more problems there were beyond ``errors``.
        created_ids: the ids of the members created (``inserted`` of them), for
            what a new member starts, e.g. a welcome sequence.
    """

    path: Path
    mode: ImportMode
    rows: int
    inserted: int
    updated: int
    skipped: int
    errors: tuple[RowError, ...]
    errors_omitted: int = 0
    created_ids: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the file had no problem at all."""
        return not self.errors and not self.errors_omitted

    @property
    def error_count(self) -> int:
        """Every problem found, listed or not."""
        return len(self.errors) + self.errors_omitted


class MemberImportError(ValueError):
    """The file cannot be imported at all: nothing was written.

    Raised for an unknown format, an unreadable file, bad UTF-8, broken CSV
    quoting, or a CSV header that is empty, lacks ``external_id``, or names
    unknown or repeated columns. Problems within rows are not raised: they are in the
    :class:`ImportReport`.

    Attributes:
        errors: every problem found, each with its line and field.
    """

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = tuple(errors)
        shown = "; ".join(str(e) for e in self.errors[:10])
        more = len(self.errors) - 10
        super().__init__(shown + (f" (and {more} more)" if more > 0 else ""))
