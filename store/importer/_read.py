"""Reading import files into raw rows: CSV and JSON Lines, with physical line numbers.

Nothing here judges a value; it only finds rows, their line, and problems of
shape (a CSV row with the wrong number of cells, a line that is not a JSON
object, an unknown key). Whole-file problems raise :class:`MemberImportError`
before the first row is returned.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ._model import MemberImportError, RowError

__all__ = [
    "ATTRIBUTE_PREFIX",
    "CONSENT_FIELDS",
    "CSV_SUFFIXES",
    "JSONL_SUFFIXES",
    "LOT_FIELDS",
    "MEMBER_FIELDS",
    "RawRow",
    "check_encoding",
    "json_kind",
    "open_rows",
    "unknown_problem",
]

MEMBER_FIELDS = (
    "external_id",
    "name",
    "email",
    "phone",
    "locale",
    "time_zone",
    "tier",
    "points_balance",
    "enrolled_at",
    "purchases_count",
    "last_purchase_at",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
)
CONSENT_FIELDS = {
    "consent_sms": "sms",
    "consent_email": "email",
    "consent_push": "push",
    "consent_direct_mail": "direct_mail",
}
"""Import field -> the channel name its consent row carries."""
LOT_FIELDS = ("points", "earned_at", "expires_at")
ATTRIBUTE_PREFIX = "attributes."
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})

_SCALAR_FIELDS = (*MEMBER_FIELDS, *CONSENT_FIELDS)
_CSV_FIELDS = frozenset(_SCALAR_FIELDS)
_JSONL_FIELDS = frozenset({*_SCALAR_FIELDS, "attributes", "lots"})
_ENCODING_BLOCK = 1 << 20


@dataclass(slots=True)
class RawRow:
    """One data row as read: its first physical line, its values by field, shape problems.

    ``values`` holds the known fields present in the row (CSV cells as
    strings, JSON values as parsed); a CSV's ``attributes.<key>`` cells are
    gathered into ``values["attributes"]`` as a dict of strings.
    """

    line: int
    values: dict[str, Any]
    problems: list[RowError] = field(default_factory=list)


def unknown_problem(name: str, known: frozenset[str] | tuple[str, ...], what: str) -> str:
    """``unknown column``, with the closest known name when there is one."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f"unknown {what}; did you mean {close[0]!r}?" if close else f"unknown {what}"


def check_encoding(path: Path) -> None:
    """Read ``path`` once as UTF-8 so bad bytes refuse the file before anything is written.

    Raises:
        MemberImportError: the file cannot be opened, or is not UTF-8 (the
            error names the line of the first bad byte).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0
    try:
        with path.open("rb") as f:
            while block := f.read(_ENCODING_BLOCK):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    newlines += exc.object[: exc.start].count(b"\n")
                    raise _bad_encoding(path, newlines + 1, exc.object[exc.start]) from exc
                newlines += block.count(b"\n")
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                raise _bad_encoding(path, newlines + 1, exc.object[exc.start]) from exc
    except OSError as exc:
        raise MemberImportError([_file_error(path, f"cannot be read: {exc}")]) from exc


def _bad_encoding(path: Path, line: int, byte: int) -> MemberImportError:
    problem = f"is not valid UTF-8 (byte 0x{byte:02x}); save the file as UTF-8"
    return MemberImportError([_file_error(path, problem, line)])


def _file_error(path: Path, problem: str, line: int = 0, field: str | None = None) -> RowError:
    return RowError(file=path.name, line=line, field=field, problem=problem)


@contextmanager
def open_rows(path: Path) -> Iterator[Iterator[RawRow]]:
    """Open ``path`` and yield an iterator over its data rows.

    The format, the encoding and a CSV's syntax (the whole file) and its
    header are checked on entry, so a file that cannot be imported at all
    raises before the first row is read.

    Raises:
        MemberImportError: unknown format, unreadable file, not UTF-8, broken
            CSV quoting, or a bad CSV header.
    """
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
        known = ", ".join(sorted(CSV_SUFFIXES | JSONL_SUFFIXES))
        problem = f"unknown format {path.suffix or '(no extension)'!r}; use one of {known}"
        raise MemberImportError([_file_error(path, problem)])
    check_encoding(path)
    try:
        f = path.open(encoding="utf-8-sig", newline="" if suffix in CSV_SUFFIXES else None)
    except OSError as exc:
        raise MemberImportError([_file_error(path, f"cannot be read: {exc}")]) from exc
    with f:
        rows = _csv_rows(path, f) if suffix in CSV_SUFFIXES else _jsonl_rows(path, f)
        try:
            yield rows
        except UnicodeDecodeError as exc:  # the file changed since check_encoding
            raise MemberImportError([_file_error(path, f"is not valid UTF-8 ({exc})")]) from exc


def _csv_header(path: Path, reader: Any) -> list[str]:
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        problem = "has no header row; the first line must name the columns"
        raise MemberImportError([_file_error(path, problem, 1)])
    names = [h.strip() for h in header]
    errors: list[RowError] = []
    if "external_id" not in names:
        problem = "column is missing; every file needs an external_id column"
        errors.append(_file_error(path, problem, 1, "external_id"))
    seen: set[str] = set()
    for number, name in enumerate(names, start=1):
        if not name:
            errors.append(_file_error(path, f"column {number} has no name", 1))
        elif name in seen:
            errors.append(_file_error(path, "column appears more than once", 1, name))
        elif name not in _CSV_FIELDS and not (
            name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX)
        ):
            errors.append(_file_error(path, unknown_problem(name, _CSV_FIELDS, "column"), 1, name))
        seen.add(name)
    if errors:
        raise MemberImportError(errors)
    return names


def _check_csv_syntax(path: Path, f: TextIO) -> None:
    """Parse the whole CSV once, so broken quoting refuses the file before anything is written."""
    reader = csv.reader(f, strict=True)
    end = 0
    try:
        for _ in reader:
            end = reader.line_num
    except csv.Error as exc:
        problem = f"is not valid CSV ({exc}); check the quotes"
        raise MemberImportError([_file_error(path, problem, end + 1)]) from exc
    f.seek(0)


def _csv_rows(path: Path, f: TextIO) -> Iterator[RawRow]:
    _check_csv_syntax(path, f)
    reader = csv.reader(f, strict=True)
    names = _csv_header(path, reader)
    attribute_columns = [n for n in names if n.startswith(ATTRIBUTE_PREFIX)]
    return _csv_body(path, reader, names, bool(attribute_columns))


def _csv_body(path: Path, reader: Any, names: list[str], has_attributes: bool) -> Iterator[RawRow]:
    width = len(names)
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the file changed since _check_csv_syntax
            problem = f"is not valid CSV ({exc}); the rest of the file was not read"
            yield RawRow(start, {}, [_file_error(path, problem, start)])
            return
        end = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            problem = f"has {len(cells)} cells but the header has {width} columns"
            yield RawRow(start, {}, [_file_error(path, problem, start)])
            continue
        values: dict[str, Any] = {}
        attributes: dict[str, str] = {}
        for name, cell in zip(names, cells, strict=True):
            if name.startswith(ATTRIBUTE_PREFIX):
                attributes[name[len(ATTRIBUTE_PREFIX) :]] = cell
            else:
                values[name] = cell
        if has_attributes:
            values["attributes"] = attributes
        yield RawRow(start, values)


def _jsonl_rows(path: Path, f: TextIO) -> Iterator[RawRow]:
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            problem = f"is not valid JSON: {exc.msg} (column {exc.pos + 1})"
            yield RawRow(line, {}, [_file_error(path, problem, line)])
            continue
        if not isinstance(obj, dict):
            problem = f"must be a JSON object, not {json_kind(obj)}"
            yield RawRow(line, {}, [_file_error(path, problem, line)])
            continue
        problems = [
            _file_error(path, unknown_problem(key, _JSONL_FIELDS, "field"), line, key)
            for key in obj
            if key not in _JSONL_FIELDS
        ]
        values = {key: value for key, value in obj.items() if key in _JSONL_FIELDS}
        yield RawRow(line, values, problems)


def json_kind(value: Any) -> str:
    """How a JSON value is named in messages: ``an object``, ``an array``, ``a string``, ..."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
