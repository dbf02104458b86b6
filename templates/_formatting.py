"""Locale-aware formatting filters (Babel) for templates.

Each filter reads the member's ``locale`` and ``time_zone`` from the render
context: the top-level ``locale`` / ``time_zone`` keys, else the same keys of
the ``member`` dict, else the defaults (``en`` and ``UTC``).

An unknown or malformed locale (``"xx"``, ``"not a locale"``) falls back to
``en`` and an unknown time zone to UTC, with one warning logged per distinct
bad value: a member's odd profile data must not stop their message from being
sent. Both BCP 47 (``de-DE``) and POSIX (``de_DE``) spellings are accepted.

Filters, with what they give in ``en`` and in ``de``:

- ``{{ member.points_balance|number }}``: ``1,234`` / ``1.234``
- ``{{ d|date }}``: ``Nov 30, 2026`` / ``30.11.2026``;
  ``{{ d|date("long") }}``: ``November 30, 2026`` / ``30. November 2026``
- ``{{ t|datetime("short") }}``: ``11/30/26, 9:00 PM`` / ``30.11.26, 21:00``
- ``{{ 12.5|currency("EUR") }}``: ``€12.50`` / ``12,50 €``

``date`` and ``datetime`` take ``short``, ``medium`` (the default), ``long``,
``full`` or a CLDR pattern such as ``"d MMM"``. Given an aware datetime they
first convert it to the member's time zone, so 2026-12-01T02:00Z is Nov 30 in
America/New_York; a naive datetime is taken to be UTC (the store keeps instants
in UTC); a ``datetime.date`` is shown as is. ISO 8601 strings are accepted too.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, is_currency
from jinja2 import Undefined, pass_context
from jinja2.runtime import Context

logger = logging.getLogger(__name__)

#: Locale used when the context has none or an unusable one.
DEFAULT_LOCALE = "en"
#: Time zone used when the context has none or an unusable one.
DEFAULT_TIME_ZONE = "UTC"
#: Format of ``date`` and ``datetime`` when the template gives none.
DEFAULT_DATE_FORMAT = "medium"


@lru_cache(maxsize=256)
def resolve_locale(identifier: str) -> Locale:
    """Return the Babel locale for an identifier, falling back to ``en``.

    Args:
        identifier: ``"de"``, ``"de_DE"`` or ``"de-DE"``.

    Returns:
        The parsed locale, or :data:`DEFAULT_LOCALE` when it is unknown or
        malformed (logged once per identifier).
    """
    try:
        return Locale.parse(identifier.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        logger.warning("unknown locale %r; formatting in %r", identifier, DEFAULT_LOCALE)
        return Locale.parse(DEFAULT_LOCALE)


@lru_cache(maxsize=256)
def resolve_time_zone(key: str) -> dt.tzinfo:
    """Return the time zone for an IANA key, falling back to UTC.

    Args:
        key: ``"Europe/Berlin"``.

    Returns:
        The zone, or UTC when the key is unknown or malformed (logged once per
        key).
    """
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        logger.warning("unknown time zone %r; using %s", key, DEFAULT_TIME_ZONE)
        return dt.UTC


def _setting(context: Context, key: str) -> str | None:
    value = context.get(key)
    if value is None:
        member = context.get("member")
        if isinstance(member, Mapping):
            value = member.get(key)
    return value if isinstance(value, str) and value else None


def _locale(context: Context) -> Locale:
    return resolve_locale(_setting(context, "locale") or DEFAULT_LOCALE)


def _time_zone(context: Context) -> dt.tzinfo:
    return resolve_time_zone(_setting(context, "time_zone") or DEFAULT_TIME_ZONE)


def _defined(value: Any) -> Any:
    """Raise the undefined error a missing value carries, instead of a TypeError."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def _as_number(value: Any, filter_name: str) -> int | float | Decimal:
    value = _defined(value)
    if isinstance(value, str):
        return Decimal(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"{filter_name} needs a number, got {type(value).__name__}")
    return value


def _as_date_or_datetime(value: Any, filter_name: str) -> dt.date:
    value = _defined(value)
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.date):
        raise TypeError(f"{filter_name} needs a date or datetime, got {type(value).__name__}")
    return value


def _in_zone(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(zone)


@pass_context
def number_filter(context: Context, value: Any, format: str | None = None) -> str:
    """Format a number for the member's locale: ``1234`` -> ``1,234`` (en), ``1.234`` (de).

    Args:
        context: The render context (passed by Jinja).
        value: An int, float, Decimal or numeric string.
        format: An optional CLDR number pattern such as ``"#,##0.0"``.

    Returns:
        The formatted number.
    """
    number = _as_number(value, "number")
    if type(number) is int:  # balances and points: the same few values, member after member
        return _format_int(number, format, _locale(context))
    return str(format_decimal(number, format=format, locale=_locale(context)))


@lru_cache(maxsize=8192)
def _format_int(value: int, format: str | None, locale: Locale) -> str:
    """``format_decimal`` of an int, remembered: Babel takes about 9 us a number."""
    return str(format_decimal(value, format=format, locale=locale))


@pass_context
def currency_filter(context: Context, value: Any, currency: str, format: str | None = None) -> str:
    """Format an amount of money for the member's locale: ``€12.50`` (en), ``12,50 €`` (de).

    Args:
        context: The render context (passed by Jinja).
        value: The amount, an int, float, Decimal or numeric string.
        currency: An ISO 4217 code such as ``"EUR"`` (case-insensitive).
        format: An optional CLDR currency pattern.

    Returns:
        The formatted amount.

    Raises:
        ValueError: ``currency`` is not an ISO 4217 code Babel knows.
    """
    code = str(_defined(currency)).upper()
    if not is_currency(code):
        raise ValueError(f"unknown currency code {currency!r}")
    amount = _as_number(value, "currency")
    return str(format_currency(amount, code, format=format, locale=_locale(context)))


@pass_context
def date_filter(context: Context, value: Any, format: str = DEFAULT_DATE_FORMAT) -> str:
    """Format a date in the member's locale, a datetime first moved to their time zone.

    Args:
        context: The render context (passed by Jinja).
        value: A ``datetime.date``, a ``datetime.datetime`` (naive means UTC)
            or an ISO 8601 string.
        format: ``short``, ``medium``, ``long``, ``full`` or a CLDR pattern.

    Returns:
        The formatted date.
    """
    day = _as_date_or_datetime(value, "date")
    if isinstance(day, dt.datetime):
        day = _in_zone(day, _time_zone(context)).date()
    return str(format_date(day, format=format, locale=_locale(context)))


@pass_context
def datetime_filter(context: Context, value: Any, format: str = DEFAULT_DATE_FORMAT) -> str:
    """Format an instant in the member's locale and time zone.

    Args:
        context: The render context (passed by Jinja).
        value: A ``datetime.datetime`` (naive means UTC) or an ISO 8601 string.
        format: ``short``, ``medium``, ``long``, ``full`` or a CLDR pattern.

    Returns:
        The formatted date and time.

    Raises:
        TypeError: ``value`` is a plain date, which has no time to show.
    """
    instant = _as_date_or_datetime(value, "datetime")
    if not isinstance(instant, dt.datetime):
        raise TypeError("datetime needs a datetime, got a date (use the date filter)")
    zone = _time_zone(context)
    local = _in_zone(instant, zone)
    return str(format_datetime(local, format=format, tzinfo=zone, locale=_locale(context)))


#: The filters every template environment gets, by the name templates use.
FILTERS: Mapping[str, Callable[..., str]] = {
    "number": number_filter,
    "currency": currency_filter,
    "date": date_filter,
    "datetime": datetime_filter,
}
