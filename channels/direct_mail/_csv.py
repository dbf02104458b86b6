"""The export file's bytes: formula neutralization and RFC 4180 CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

__all__ = ["FORMULA_PREFIXES", "neutralize", "render_csv"]

#: A cell starting with one of these is read as a formula by spreadsheet programs
#: (OWASP "CSV Injection"); such a cell gets a leading single quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralize(cell: str) -> str:
    """``cell`` with a ``'`` in front when a spreadsheet would run it as a formula.

    The quote is visible to a program that reads the file as data, so a name
    such as ``-Dash-`` prints as ``'-Dash-``: OWASP's trade-off, taken because
    vendors' staff open these files in spreadsheets.
    """
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


def render_csv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """The header and rows as UTF-8 CSV (RFC 4180: ``\\r\\n``, quotes only where needed).

    Every cell, the header's included, is passed through :func:`neutralize`.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow([neutralize(name) for name in columns])
    writer.writerows([neutralize(cell) for cell in row] for row in rows)
    return buffer.getvalue().encode("utf-8")
