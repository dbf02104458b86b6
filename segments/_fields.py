"""The field whitelist: which member columns a rule may name, and their value types.

Adding a field is one row in :data:`FIELDS`; adding a kind of value is one
member of :class:`FieldType` plus one branch in :func:`check_value`.
"""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType

from sqlalchemy.orm import InstrumentedAttribute

from store.models import Member

from ._errors import RuleError
from ._rules import Scalar

__all__ = ["FIELDS", "INTEGER_MAX", "INTEGER_MIN", "FieldSpec", "FieldType", "check_value"]

INTEGER_MIN = -(2**31)
"""The smallest integer a rule may hold: integer fields are 32-bit columns.

PostgreSQL casts the bound value to the column's type, so a larger value would
fail the query (``integer out of range``) instead of simply not matching.
"""
INTEGER_MAX = 2**31 - 1
"""The largest integer a rule may hold (see :data:`INTEGER_MIN`)."""

_SHOWN_TEXT_LENGTH = 40


class FieldType(enum.Enum):
    """The kind of value a field holds, which decides the values and operators it takes."""

    TEXT = "text"
    """A string; compared exactly (case-sensitive). Only ``=``, ``!=``, ``in`` and friends."""
    INTEGER = "integer"
    """A 32-bit integer; booleans are not integers here."""
    INSTANT = "instant"
    """An instant, given as ISO-8601 text with an offset or ``Z`` and held as aware UTC."""

    @property
    def python_type(self) -> type:
        """The Python type of this field's values once checked."""
        return {FieldType.TEXT: str, FieldType.INTEGER: int, FieldType.INSTANT: datetime}[self]

    @property
    def ordered(self) -> bool:
        """Whether ``<``, ``<=``, ``>`` and ``>=`` apply.

        Text is not ordered on purpose: PostgreSQL orders text by the database's
        collation (``en_US`` puts ``"adam"`` before ``"Zoe"``, ``C`` does not),
        so the same rule would pick different members on different servers.
        """
        return self is not FieldType.TEXT


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldSpec:
    """One whitelisted field: its name in rules, its value type and its column."""

    name: str
    type: FieldType
    column: InstrumentedAttribute[typing.Any]


def _fields(*specs: FieldSpec) -> Mapping[str, FieldSpec]:
    return MappingProxyType({spec.name: spec for spec in specs})


FIELDS: Mapping[str, FieldSpec] = _fields(
    FieldSpec(name="external_id", type=FieldType.TEXT, column=Member.external_id),
    FieldSpec(name="name", type=FieldType.TEXT, column=Member.name),
    FieldSpec(name="email", type=FieldType.TEXT, column=Member.email),
    FieldSpec(name="phone", type=FieldType.TEXT, column=Member.phone),
    FieldSpec(name="locale", type=FieldType.TEXT, column=Member.locale),
    FieldSpec(name="time_zone", type=FieldType.TEXT, column=Member.time_zone),
    FieldSpec(name="tier", type=FieldType.TEXT, column=Member.tier),
    FieldSpec(name="points_balance", type=FieldType.INTEGER, column=Member.points_balance),
    FieldSpec(name="enrolled_at", type=FieldType.INSTANT, column=Member.enrolled_at),
    FieldSpec(name="purchases_count", type=FieldType.INTEGER, column=Member.purchases_count),
    FieldSpec(name="last_purchase_at", type=FieldType.INSTANT, column=Member.last_purchase_at),
    FieldSpec(name="address_country", type=FieldType.TEXT, column=Member.address_country),
    FieldSpec(name="address_state", type=FieldType.TEXT, column=Member.address_state),
    FieldSpec(name="address_city", type=FieldType.TEXT, column=Member.address_city),
)
"""The whitelist: every field a rule may name, in the order a form would list them."""


def check_value(field_type: FieldType, value: object, path: str) -> Scalar:
    """Check one value against a field's type and convert it.

    Args:
        field_type: the type of the field the value is compared with.
        value: the value as decoded from YAML or JSON.
        path: where the value is, for the error.

    Returns:
        The value: a ``str``, an ``int`` or an aware UTC ``datetime``.

    Raises:
        RuleError: the value does not fit the field.
    """
    hint = ' (use op "is null" to match a missing value)' if value is None else ""
    if field_type is FieldType.TEXT:
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
    return _check_instant(value, path, hint)


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
