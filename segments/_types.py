"""Value types: what a field holds, and checking the values a rule compares it with.

Adding a kind of value is one member of :class:`FieldType` plus one branch in
:func:`check_value`.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TypeAlias

from ._errors import RuleError

__all__ = [
    "INTEGER_MAX",
    "INTEGER_MIN",
    "MAX_DURATION",
    "NUMBER_LIMIT",
    "FieldType",
    "Operand",
    "Scalar",
    "check_duration",
    "check_value",
    "describe",
]

Scalar: TypeAlias = str | int | float | bool | datetime | timedelta
"""One value a field can be compared with (a duration for the relative-date operators)."""

Operand: TypeAlias = Scalar | tuple[Scalar, ...] | None
"""What a condition compares with: a value, a list (``in``, ``between``) or nothing."""

INTEGER_MIN = -(2**31)
"""The smallest integer a rule may hold: integer fields are 32-bit columns.

PostgreSQL casts the bound value to the column's type, so a larger value would
fail the query (``integer out of range``) instead of simply not matching.
"""
INTEGER_MAX = 2**31 - 1
"""The largest integer a rule may hold (see :data:`INTEGER_MIN`)."""

NUMBER_LIMIT = 10**15
"""The largest magnitude a ``number`` value may have in a rule."""

MAX_DURATION = timedelta(days=100 * 366)
"""The longest duration a relative date may span (about a century)."""

_SHOWN_TEXT_LENGTH = 40
_DURATION = re.compile(r"([0-9]{1,6})([hdw])")
_DURATION_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DURATION_HINT = 'expected a duration like "30d", "12h" or "2w"'


class FieldType(enum.Enum):
    """The kind of value a field holds, which decides the values and operators it takes."""

    TEXT = "text"
    """A string; compared exactly (case-sensitive): ``=``, ``in``, ``starts_with`` and friends."""
    INTEGER = "integer"
    """A whole number; booleans are not integers here."""
    NUMBER = "number"
    """A number, whole or not (attributes only)."""
    BOOLEAN = "boolean"
    """``true`` or ``false`` (attributes only)."""
    INSTANT = "instant"
    """An instant, given as ISO-8601 text with an offset or ``Z`` and held as aware UTC."""
    TEXT_LIST = "text_list"
    """A list of strings (attributes only); tested with ``contains``."""

    @property
    def python_type(self) -> type:
        """The Python type of this field's values once checked (a list's items for text_list)."""
        return _PYTHON_TYPES[self]

    @property
    def ordered(self) -> bool:
        """Whether ``<``, ``<=``, ``>``, ``>=`` and ``between`` apply.

        Text is not ordered on purpose: PostgreSQL orders text by the database's
        collation (``en_US`` puts ``"adam"`` before ``"Zoe"``, ``C`` does not),
        so the same rule would pick different members on different servers.
        """
        return self in (FieldType.INTEGER, FieldType.NUMBER, FieldType.INSTANT)


_PYTHON_TYPES: Mapping[FieldType, type] = {
    FieldType.TEXT: str,
    FieldType.INTEGER: int,
    FieldType.NUMBER: float,
    FieldType.BOOLEAN: bool,
    FieldType.INSTANT: datetime,
    FieldType.TEXT_LIST: str,
}


def check_value(field_type: FieldType, value: object, path: str) -> Scalar:
    """Check one value against a field's type and convert it.

    Args:
        field_type: the type of the field the value is compared with (for a
            ``text_list``, the type of one item).
        value: the value as decoded from YAML or JSON.
        path: where the value is, for the error.

    Returns:
        The value: a ``str``, ``int``, ``float``, ``bool`` or an aware UTC ``datetime``.

    Raises:
        RuleError: the value does not fit the field.
    """
    hint = ' (use op "is null" to match a missing value)' if value is None else ""
    if field_type in (FieldType.TEXT, FieldType.TEXT_LIST):
        if not isinstance(value, str):
            raise RuleError(path, f"expected text, got {describe(value)}{hint}")
        if "\x00" in value or not _is_utf8(value):
            raise RuleError(path, "text must not contain NUL or unpaired surrogate characters")
        return value
    if field_type is FieldType.INTEGER:
        if not isinstance(value, int) or isinstance(value, bool):
            raise RuleError(path, f"expected an integer, got {describe(value)}{hint}")
        if not INTEGER_MIN <= value <= INTEGER_MAX:
            raise RuleError(
                path,
                f"expected an integer from {INTEGER_MIN} to {INTEGER_MAX}, got {describe(value)}",
            )
        return value
    if field_type is FieldType.NUMBER:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RuleError(path, f"expected a number, got {describe(value)}{hint}")
        if not (math.isfinite(value) and -NUMBER_LIMIT <= value <= NUMBER_LIMIT):
            raise RuleError(path, f"expected a number from -1e15 to 1e15, got {describe(value)}")
        return value
    if field_type is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise RuleError(path, f"expected true or false, got {describe(value)}{hint}")
        return value
    return _check_instant(value, path, hint)


def check_duration(value: object, path: str) -> timedelta:
    """Check a duration such as ``30d``, ``12h`` or ``2w`` and convert it.

    Raises:
        RuleError: the value is not a duration, or spans more than :data:`MAX_DURATION`.
    """
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise RuleError(path, f"{_DURATION_HINT}, got {describe(value)}")
    duration = int(match[1]) * _DURATION_UNITS[match[2]]
    if duration > MAX_DURATION:
        raise RuleError(path, f"{describe(value)} is longer than 100 years")
    return duration


def _check_instant(value: object, path: str, hint: str) -> datetime:
    expected = 'expected an ISO-8601 date-time with an offset or "Z"'
    instant = value
    if isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            raise RuleError(path, f"{expected}, got {describe(value)}") from None
    if not isinstance(instant, datetime):
        # YAML turns an unquoted 2026-12-01 into a date: it names a day, not an instant.
        raise RuleError(path, f"{expected}, got {describe(value)}{hint}")
    if instant.utcoffset() is None:
        raise RuleError(path, f"{expected}, got {describe(value)}")
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        raise RuleError(path, f"{describe(value)} is out of range in UTC") from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def describe(value: object) -> str:
    """Show a decoded value the way the user wrote it, briefly, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        cut = value[:_SHOWN_TEXT_LENGTH]
        shown = json.dumps(cut, ensure_ascii=False).encode("utf-8", "backslashreplace")
        return shown.decode("utf-8") + ("…" if len(value) > len(cut) else "")
    if isinstance(value, datetime):
        return f"the date-time {value.isoformat()}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"
