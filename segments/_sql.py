"""The few SQL pieces that SQLite and PostgreSQL spell differently, with their Python twins.

:class:`PerDialect` holds one expression per engine and compiles to the one of
the engine at hand, so :func:`segments.compile_rule` stays engine-neutral and
every value stays a bound parameter. Each helper here has a Python twin that
:func:`segments.evaluate_rule` uses, and the two must agree on every input.

Typed attribute access (``attributes.<key>``): a JSON value of the declared
type is its value; a missing key, a JSON ``null`` or a value of another type is
NULL (missing), so the NULL rule applies. Integers must be whole JSON numbers
below 10^16 in magnitude; numbers below 10^300. Instants are ISO-8601 UTC text
(``2026-12-01T10:00:00Z``, with ``.250Z`` or ``.250000Z``, or ``+00:00``
instead of ``Z``); they are compared as fixed-width UTC text, byte by byte.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    String,
    Text,
    and_,
    case,
    cast,
    collate,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeEngine

from ._types import FieldType

__all__ = [
    "WHITESPACE",
    "PerDialect",
    "attribute_sql",
    "attribute_value",
    "contains_sql",
    "contains_value",
    "e164_sql",
    "instant_text",
    "is_e164",
    "stripped",
    "stripped_sql",
]

WHITESPACE = " \t\n\r\x0b\x0c"
"""What counts as blank around an address part, in SQL and in Python alike."""

INTEGER_LIMIT = 10**16
NUMBER_LIMIT = 10**300
_D = "[0-9]"
#: The canonical instant text, as a GLOB pattern (the regex escapes the dot).
_INSTANT_GLOB = f"{_D * 4}-{_D * 2}-{_D * 2}T{_D * 2}:{_D * 2}:{_D * 2}.{_D * 6}Z"
_INSTANT_RE = re.compile(_INSTANT_GLOB.replace(".", r"\."))
_INSTANT_LENGTHS = (20, 24, 27)  # no fraction, milliseconds, microseconds
_FRACTION = ".000000"
_E164_RE = re.compile(r"\+[0-9]+")


class PerDialect(ColumnElement[typing.Any]):
    """One expression for SQLite and one for PostgreSQL; compiles to the engine's own."""

    inherit_cache = True
    # SQLAlchemy declares this as an instance variable, so mypy refuses a ClassVar here.
    _traverse_internals = [  # noqa: RUF012
        ("sqlite", InternalTraversal.dp_clauseelement),
        ("postgresql", InternalTraversal.dp_clauseelement),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(
        self,
        *,
        sqlite: ColumnElement[typing.Any],
        postgresql: ColumnElement[typing.Any],
        type_: TypeEngine[typing.Any],
    ) -> None:
        self.sqlite = sqlite
        self.postgresql = postgresql
        self.type = type_


@compiles(PerDialect)
def _compile_per_dialect(element: PerDialect, compiler: SQLCompiler, **kw: typing.Any) -> str:
    # Any other dialect (str() of an expression uses "default") gets the SQLite spelling.
    chosen = element.postgresql if compiler.dialect.name == "postgresql" else element.sqlite
    return f"({compiler.process(chosen, **kw)})"


def _glob(text: ColumnElement[typing.Any], pattern: str, dialect: str) -> ColumnElement[bool]:
    """``text`` matches the GLOB ``pattern``; on PostgreSQL only ``.`` may need escaping."""
    if dialect == "sqlite":
        return text.op("GLOB", is_comparison=True)(literal(pattern, String))
    return _regex(text, "^" + pattern.replace(".", r"\.") + "$")


def _regex(text: ColumnElement[typing.Any], regex: str) -> ColumnElement[bool]:
    """``text`` matches the PostgreSQL regular expression ``regex``."""
    return text.op("~", is_comparison=True)(literal(regex, String))


def _instant(text: ColumnElement[typing.Any], dialect: str) -> ColumnElement[typing.Any]:
    """Instant text as 27-character UTC text, or NULL; the twin of :func:`_instant_attribute`.

    ``+00:00`` becomes ``Z``; a text of 20, 24 or 27 characters ending in ``Z``
    gets its fraction padded to six digits; the result must match the
    canonical shape. The nested CASE keeps ``substr`` away from short texts.
    """
    zulu = func.replace(text, literal("+00:00", String), literal("Z", String))
    length = func.length(zulu)
    canonical = (
        func.substr(zulu, literal(1, Integer), length - 1)
        .op("||")(func.substr(literal(_FRACTION, String), length - 19))
        .op("||")(literal("Z", String))
    )
    valid = and_(
        func.substr(zulu, length) == literal("Z", String),
        _glob(canonical, _INSTANT_GLOB, dialect),
    )
    lengths = [literal(n, Integer) for n in _INSTANT_LENGTHS]
    padded = case((length.in_(lengths), case((valid, canonical), else_=None)), else_=None)
    return padded if dialect == "sqlite" else collate(padded, "C")


def _whole_number(text: ColumnElement[typing.Any]) -> ColumnElement[bool]:
    return _regex(text, "^-?[0-9]+$")


def _typed(
    field_type: FieldType,
    kind: ColumnElement[typing.Any],
    value: ColumnElement[typing.Any],
    whole: ColumnElement[typing.Any],
    dialect: str,
) -> ColumnElement[typing.Any]:
    """The typed value from a JSON type name (``kind``), a scalar (``value``) and the raw JSON."""
    sqlite = dialect == "sqlite"
    string, number = ("text", ("integer", "real")) if sqlite else ("string", ("number",))
    if field_type in (FieldType.TEXT, FieldType.INSTANT):
        text = case((kind == literal(string, String), value), else_=None)
        return text if field_type is FieldType.TEXT else _instant(text, dialect)
    if field_type is FieldType.INTEGER:
        whole_number = (
            kind == literal("integer", String)
            if sqlite
            else and_(kind == literal("number", String), _whole_number(value))
        )
        numeric = value if sqlite else cast(value, Numeric)
        small = func.abs(numeric) < literal(INTEGER_LIMIT, Numeric)
        return case((and_(whole_number, small), numeric), else_=None)
    if field_type is FieldType.NUMBER:
        numeric = value if sqlite else cast(value, Numeric)
        is_number = kind.in_([literal(name, String) for name in number])
        small = func.abs(numeric) < literal(NUMBER_LIMIT, Numeric)
        return case((and_(is_number, small), numeric if sqlite else cast(value, Float)), else_=None)
    if field_type is FieldType.BOOLEAN:
        names = ("true", "false") if sqlite else ("boolean",)
        truth = kind == literal("true", String) if sqlite else value == literal("true", String)
        return case((kind.in_([literal(n, String) for n in names]), truth), else_=None)
    return case((kind == literal("array", String), whole), else_=None)


_SQL_TYPES: Mapping[FieldType, TypeEngine[typing.Any]] = {
    FieldType.TEXT: String(),
    FieldType.INTEGER: Integer(),
    FieldType.NUMBER: Float(),
    FieldType.BOOLEAN: Boolean(),
    FieldType.INSTANT: String(),
    FieldType.TEXT_LIST: String(),
}


def attribute_sql(
    column: ColumnElement[typing.Any], key: str, field_type: FieldType
) -> ColumnElement[typing.Any]:
    """The attribute ``key`` of the JSON ``column`` as a value of ``field_type``, or NULL.

    Instants come out as 27-character UTC text (see :func:`instant_text`);
    text lists as the JSON array itself, for :func:`contains_sql`.
    """
    path = literal(f'$."{key}"', String)
    extracted = func.json_extract(column, path)
    sqlite = _typed(field_type, func.json_type(column, path), extracted, extracted, "sqlite")
    name = cast(literal(key, String), Text)
    element = column.op("->", return_type=JSONB)(name)
    text = column.op("->>", return_type=Text)(name)
    postgresql = _typed(field_type, func.jsonb_typeof(element), text, element, "postgresql")
    return PerDialect(sqlite=sqlite, postgresql=postgresql, type_=_SQL_TYPES[field_type])


def attribute_value(raw: object, field_type: FieldType) -> object:
    """The Python twin of :func:`attribute_sql`: a decoded JSON value as ``field_type``, or None."""
    if field_type is FieldType.TEXT:
        return raw if isinstance(raw, str) else None
    if field_type is FieldType.INSTANT:
        return _instant_attribute(raw)
    if field_type is FieldType.BOOLEAN:
        return raw if isinstance(raw, bool) else None
    if field_type is FieldType.TEXT_LIST:
        return raw if isinstance(raw, list) else None
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        return None
    if field_type is FieldType.INTEGER:
        return raw if isinstance(raw, int) and abs(raw) < INTEGER_LIMIT else None
    return raw if abs(raw) < NUMBER_LIMIT else None


def _instant_attribute(raw: object) -> str | None:
    if not isinstance(raw, str):
        return None
    zulu = raw.replace("+00:00", "Z")
    if len(zulu) not in _INSTANT_LENGTHS or zulu[-1] != "Z":
        return None
    canonical = zulu[:-1] + _FRACTION[len(zulu) - 20 :] + "Z"
    return canonical if _INSTANT_RE.fullmatch(canonical) else None


def instant_text(instant: datetime) -> str:
    """An aware instant as the 27-character UTC text instant attributes are compared as."""
    t = instant
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond:06d}Z"
    )


def contains_sql(array: ColumnElement[typing.Any], item: str) -> ColumnElement[bool]:
    """The JSON array ``array`` (never NULL here) holds the string ``item``."""
    elements = func.json_each(array).table_valued("value", "type")
    sqlite = exists(
        select(literal(1))
        .select_from(elements)
        .where(elements.c.type == literal("text", String), elements.c.value == literal(item))
    )
    wanted = func.jsonb_build_array(cast(literal(item, String), Text))
    postgresql = array.op("@>", return_type=Boolean)(wanted)
    return PerDialect(sqlite=sqlite, postgresql=postgresql, type_=Boolean())


def contains_value(array: object, item: object) -> bool:
    """The Python twin of :func:`contains_sql`."""
    return isinstance(array, list) and any(isinstance(e, str) and e == item for e in array)


def e164_sql(phone: ColumnElement[typing.Any]) -> ColumnElement[bool]:
    """``phone`` is ``+`` and one or more ASCII digits (never NULL)."""
    sqlite = and_(
        _glob(phone, "+[0-9]*", "sqlite"),
        func.length(phone) > 1,
        func.substr(phone, 2).op("NOT GLOB", is_comparison=True)(literal("*[^0-9]*", String)),
    )
    postgresql = _regex(phone, r"^\+[0-9]+$")
    shaped = PerDialect(sqlite=sqlite, postgresql=postgresql, type_=Boolean())
    return and_(phone.is_not(None), shaped)


def is_e164(phone: object) -> bool:
    """The Python twin of :func:`e164_sql`."""
    return isinstance(phone, str) and _E164_RE.fullmatch(phone) is not None


def stripped_sql(text: ColumnElement[typing.Any]) -> ColumnElement[str]:
    """``text`` without :data:`WHITESPACE` at either end; empty for NULL."""
    blank = literal(WHITESPACE, String)
    sqlite = func.trim(func.coalesce(text, ""), blank)
    postgresql = func.btrim(func.coalesce(text, ""), blank)
    return PerDialect(sqlite=sqlite, postgresql=postgresql, type_=String())


def stripped(text: object) -> str:
    """The Python twin of :func:`stripped_sql`."""
    return text.strip(WHITESPACE) if isinstance(text, str) else ""
