"""Validating one raw row: every field checked, every problem named, before anything is written."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import available_timezones

import phonenumbers
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import String

from ..models import Base, ConsentStatus
from ._model import RowError
from ._read import CONSENT_FIELDS, LOT_FIELDS, RawRow, json_kind, unknown_problem

__all__ = ["MAX_INT", "Lot", "RowValidator", "ValidRow"]

T = TypeVar("T")

MAX_INT = 2**31 - 1
"""The largest value an ``Integer`` column holds on PostgreSQL."""

_MEMBERS = Base.metadata.tables["members"]
_CONSENT_WORDS = {
    "yes": ConsentStatus.OPTED_IN,
    "true": ConsentStatus.OPTED_IN,
    "1": ConsentStatus.OPTED_IN,
    "opted_in": ConsentStatus.OPTED_IN,
    "no": ConsentStatus.OPTED_OUT,
    "false": ConsentStatus.OPTED_OUT,
    "0": ConsentStatus.OPTED_OUT,
    "opted_out": ConsentStatus.OPTED_OUT,
}
_CONSENT_HELP = "must be one of yes, no, true, false, 1, 0, opted_in, opted_out"
# CLDR territories with two letters that are not countries (EU, UN, "unknown", pseudo-locales).
_NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "ZZ", "XA", "XB"})
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class _Invalid(Exception):
    """A value is refused; ``problem`` says why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(slots=True)
class Lot:
    """A point lot to append for a newly inserted member."""

    points: int
    earned_at: datetime
    expires_at: datetime | None


@dataclass(slots=True)
class ValidRow:
    """A row that passed every check, with its values normalized.

    ``values`` holds only the member columns the row gives (non-empty),
    ``external_id`` included; ``consents`` maps channel to status.
    """

    line: int
    external_id: str
    values: dict[str, Any]
    attributes: dict[str, Any]
    consents: dict[str, str]
    lots: list[Lot]


class RowValidator:
    """Validates the rows of one file, remembering external_ids to refuse duplicates.

    Args:
        file: the file's name, for error messages.
        default_region: ISO region for phone numbers written without ``+``.
    """

    def __init__(self, file: str, default_region: str) -> None:
        self.file = file
        self.region = default_region
        self._seen: dict[str, int] = {}
        self._parsers: dict[str, Callable[[str], Any]] = {
            "external_id": _plain,
            "name": _plain,
            "email": _email,
            "phone": self._phone,
            "locale": _locale,
            "time_zone": _time_zone,
            "tier": _plain,
            "points_balance": _count,
            "enrolled_at": _instant,
            "purchases_count": _count,
            "last_purchase_at": _instant,
            "address_line1": _plain,
            "address_line2": _plain,
            "address_city": _plain,
            "address_state": _plain,
            "address_zip": _plain,
            "address_country": _country,
        }

    def __call__(self, raw: RawRow) -> ValidRow | list[RowError]:
        """Check every field of ``raw``: a :class:`ValidRow`, or every problem found."""
        errors = list(raw.problems)
        if errors and not raw.values:
            return errors
        values: dict[str, Any] = {}
        for name, parse in self._parsers.items():
            if name in raw.values:
                value = self._check(raw.line, name, raw.values[name], parse, errors)
                if value is not None:
                    values[name] = value
        consents: dict[str, str] = {}
        for name, channel in CONSENT_FIELDS.items():
            if name in raw.values:
                status = self._check(raw.line, name, raw.values[name], _consent, errors)
                if status is not None:
                    consents[channel] = status
        external_id = values.get("external_id")
        if external_id is None:
            if not any(e.field == "external_id" for e in errors):
                errors.append(self._error(raw.line, "external_id", "is required"))
        else:
            first = self._seen.setdefault(external_id, raw.line)
            if first != raw.line:
                problem = f"{external_id!r} already appears on line {first}"
                errors.append(self._error(raw.line, "external_id", problem))
        attributes = self._attributes(raw, errors)
        lots = self._lots(raw, errors)
        if errors or external_id is None:
            return errors
        return ValidRow(raw.line, external_id, values, attributes, consents, lots)

    def _error(self, line: int, field: str | None, problem: str) -> RowError:
        return RowError(file=self.file, line=line, field=field, problem=problem)

    def _check(
        self,
        line: int,
        field: str,
        raw: Any,
        parse: Callable[[str], T],
        errors: list[RowError],
        *,
        required: bool = False,
    ) -> T | None:
        """``parse`` a non-empty value; ``None`` when empty (or refused, with the error added)."""
        try:
            text = _text(raw, booleans=field in _CONSENT_FIELD_NAMES)
            if text == "":
                if required:
                    raise _Invalid("is required")
                return None
            value = parse(text)
            _check_length(field, value)
        except _Invalid as exc:
            errors.append(self._error(line, field, exc.problem))
            return None
        return value

    def _phone(self, text: str) -> str:
        try:
            number = phonenumbers.parse(text, self.region)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            raise _Invalid(f"not a valid phone number for region {self.region}: {text!r}")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def _attributes(self, raw: RawRow, errors: list[RowError]) -> dict[str, Any]:
        given = raw.values.get("attributes")
        if given is None:
            return {}
        if not isinstance(given, dict):
            problem = f"must be a JSON object, not {json_kind(given)}"
            errors.append(self._error(raw.line, "attributes", problem))
            return {}
        attributes: dict[str, Any] = {}
        for key, value in given.items():
            if isinstance(value, str):
                value = value.strip()
            if value is not None and value != "":
                attributes[key] = value
        return attributes

    def _lots(self, raw: RawRow, errors: list[RowError]) -> list[Lot]:
        given = raw.values.get("lots")
        if given is None:
            return []
        shape = "object with points, earned_at and expires_at"
        if not isinstance(given, list):
            problem = f"must be an array of {shape}s, not {json_kind(given)}"
            errors.append(self._error(raw.line, "lots", problem))
            return []
        lots: list[Lot] = []
        for index, item in enumerate(given):
            where = f"lots[{index}]"
            if not isinstance(item, dict):
                problem = f"must be an {shape}, not {json_kind(item)}"
                errors.append(self._error(raw.line, where, problem))
                continue
            before = len(errors)
            for key in item:
                if key not in LOT_FIELDS:
                    problem = unknown_problem(key, LOT_FIELDS, "field")
                    errors.append(self._error(raw.line, f"{where}.{key}", problem))
            line = raw.line
            points = self._check(
                line, f"{where}.points", item.get("points"), _points, errors, required=True
            )
            earned_at = self._check(
                line, f"{where}.earned_at", item.get("earned_at"), _instant, errors, required=True
            )
            expires_at = self._check(
                line, f"{where}.expires_at", item.get("expires_at"), _instant, errors
            )
            if earned_at is not None and expires_at is not None and expires_at <= earned_at:
                errors.append(self._error(line, f"{where}.expires_at", "must be after earned_at"))
            if len(errors) == before and points is not None and earned_at is not None:
                lots.append(Lot(points, earned_at, expires_at))
        return lots


_CONSENT_FIELD_NAMES = frozenset(CONSENT_FIELDS)


def _text(raw: Any, *, booleans: bool = False) -> str:
    """A JSON or CSV value as stripped text (``""`` for null; booleans only if ``booleans``)."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw.strip()
    if booleans and isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Invalid(f"must be text or a number, not {json_kind(raw)}")
    return str(raw)


def _check_length(field: str, value: Any) -> None:
    column = _MEMBERS.c.get(field)
    if column is None or not isinstance(value, str) or not isinstance(column.type, String):
        return
    limit = column.type.length
    if limit is not None and len(value) > limit:
        raise _Invalid(f"is longer than {limit} characters ({len(value)})")


def _plain(text: str) -> str:
    return text


def _email(text: str) -> str:
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise _Invalid(f"not a valid email address: {text!r} ({exc})") from None


@lru_cache(maxsize=1024)
def _locale(text: str) -> str:
    try:
        return str(Locale.parse(text.replace("-", "_")))
    except (ValueError, TypeError, UnknownLocaleError):
        raise _Invalid(f"not a known locale: {text!r}") from None


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _time_zone(text: str) -> str:
    if text not in _zones():
        raise _Invalid(f"not an IANA time zone name: {text!r}")
    return text


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    territories = Locale("en").territories
    codes = (c for c in territories if isinstance(c, str) and len(c) == 2 and c.isalpha())
    return frozenset(codes) - _NOT_COUNTRIES


def _country(text: str) -> str:
    code = text.upper()
    if code not in _countries():
        hint = " (the United Kingdom is GB)" if code == "UK" else ""
        raise _Invalid(f"not an ISO 3166-1 alpha-2 country code: {text!r}{hint}")
    return code


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"not an ISO-8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise _Invalid(f"needs a UTC offset, e.g. 2024-05-01T09:30:00Z: {text!r}")
    return value.astimezone(UTC)


def _whole(text: str, minimum: int) -> int:
    if not _WHOLE_NUMBER.fullmatch(text) or int(text) < minimum:
        raise _Invalid(f"must be a whole number, {minimum} or more: {text!r}")
    value = int(text)
    if value > MAX_INT:
        raise _Invalid(f"must be at most {MAX_INT}: {text!r}")
    return value


def _count(text: str) -> int:
    return _whole(text, 0)


def _points(text: str) -> int:
    return _whole(text, 1)


def _consent(text: str) -> str:
    status = _CONSENT_WORDS.get(text.lower())
    if status is None:
        raise _Invalid(f"{_CONSENT_HELP}: {text!r}")
    return status.value
