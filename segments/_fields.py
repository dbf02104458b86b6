"""The field whitelist: which fields a rule may name, their value types, their SQL and Python.

A field is a member column or the derived ``next_expiry``; program attributes
(``attributes.<key>``) are declared per program and checked by the parser.
Adding a column field is one row in :data:`FIELDS`.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from store.models import Member

from ._errors import RuleError
from ._predicates import next_expiry_sql, next_expiry_value
from ._types import FieldType, describe

__all__ = [
    "ATTRIBUTE_KEY",
    "ATTRIBUTE_PREFIX",
    "FIELDS",
    "FieldSpec",
    "check_attributes",
]

ATTRIBUTE_PREFIX = "attributes."
"""Fields that start with this name a program attribute: ``attributes.favourite_store``."""
ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What an attribute key may look like (letters, digits, underscores)."""

Member_ = Mapping[str, typing.Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldSpec:
    """One whitelisted field: its name in rules, its value type, and how to read it.

    ``column`` is the member column for a column field and ``None`` for a
    derived one; ``sql(now)`` and ``python(member, now)`` read the value either way.
    """

    name: str
    type: FieldType
    column: InstrumentedAttribute[typing.Any] | None
    sql: Callable[[datetime], ColumnElement[typing.Any]]
    python: Callable[[Member_, datetime], object]


def _column(name: str, field_type: FieldType) -> FieldSpec:
    column: InstrumentedAttribute[typing.Any] = getattr(Member, name)
    return FieldSpec(
        name=name,
        type=field_type,
        column=column,
        sql=lambda _now: column.expression,
        python=lambda member, _now: member.get(name),
    )


_TEXT, _INTEGER, _INSTANT = FieldType.TEXT, FieldType.INTEGER, FieldType.INSTANT

FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _column("id", _INTEGER),
            _column("external_id", _TEXT),
            _column("name", _TEXT),
            _column("email", _TEXT),
            _column("phone", _TEXT),
            _column("locale", _TEXT),
            _column("time_zone", _TEXT),
            _column("tier", _TEXT),
            _column("points_balance", _INTEGER),
            _column("enrolled_at", _INSTANT),
            _column("purchases_count", _INTEGER),
            _column("last_purchase_at", _INSTANT),
            _column("address_line1", _TEXT),
            _column("address_line2", _TEXT),
            _column("address_city", _TEXT),
            _column("address_state", _TEXT),
            _column("address_zip", _TEXT),
            _column("address_country", _TEXT),
            _column("created_at", _INSTANT),
            _column("updated_at", _INSTANT),
            _column("deleted_at", _INSTANT),
            FieldSpec(
                name="next_expiry",
                type=_INSTANT,
                column=None,
                sql=next_expiry_sql,
                python=next_expiry_value,
            ),
        )
    }
)
"""The whitelist: every field a rule may name, in the order a form would list them."""


def check_attributes(attributes: Mapping[str, str] | None) -> Mapping[str, FieldType]:
    """Check a program's attribute declarations ``{key: type name}``.

    Raises:
        RuleError: a key is not a plain name or a type is unknown (path ``attributes.<key>``).
    """
    declared: dict[str, FieldType] = {}
    for key, type_name in (attributes or {}).items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
            raise RuleError("attributes", f"{describe(key)} is not a valid attribute key")
        try:
            declared[key] = FieldType(type_name)
        except ValueError:
            names = ", ".join(t.value for t in FieldType)
            raise RuleError(
                f"attributes.{key}", f"unknown type {describe(type_name)}; expected one of {names}"
            ) from None
    return MappingProxyType(declared)
