"""Predicates beyond member columns, each as SQL and as its Python twin.

Point lots, reachability, consent and delivery history live in other tables;
each predicate is a correlated subquery (``EXISTS`` or a scalar aggregate) on
``members.id``, so nothing loads a member's lots or deliveries.

Those that hold exactly when the member has a row in a set of member ids
(``reachable: push``, ``consented`` for marketing, ``received``, a points sum
over lots) also have that set as a query of one ``member_id`` column
(:func:`push_holders`, :func:`opted_in`, :func:`receivers`,
:func:`points_expiring_members`): the whole-audience forms of
:mod:`segments._compile` join to these sets once instead of probing them per
member. Each SQL
expression is TRUE or FALSE, never NULL, except ``next_expiry``, which is NULL
when the member has no unredeemed points that expire (the NULL rule then
applies as for a column). The Python twins read a member mapping as described
in :func:`segments.evaluate_rule`.

``reachable`` is the part of ``workers.policy``'s reachability that SQL can
decide: the policy also validates phone numbers (phonenumbers) and email
addresses (email-validator) at send time, so ``reachable`` is a necessary
condition there, not a sufficient one.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    TypeDecorator,
    and_,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from store.models import Campaign, Consent, ConsentStatus, Delivery, Member, PointLot, PushToken

from ._sql import e164_sql, is_e164, stripped, stripped_sql

__all__ = [
    "CHANNELS",
    "PURPOSES",
    "RECEIVED_STATUSES",
    "consented_sql",
    "consented_value",
    "next_expiry_sql",
    "next_expiry_value",
    "opted_in",
    "points_expiring_members",
    "points_expiring_sql",
    "points_expiring_value",
    "push_holders",
    "reachable_sql",
    "reachable_value",
    "received_sql",
    "received_value",
    "receivers",
]

CHANNELS = ("sms", "email", "push", "direct_mail")
"""The channels ``reachable`` and ``consented`` name."""
PURPOSES = ("marketing", "service", "transactional")
"""The message categories ``consented`` takes in ``for``."""
RECEIVED_STATUSES = ("sent", "delivered")
"""Delivery statuses that count as "received"."""

_US = ("US", "us", "Us", "uS")
Member_ = typing.Mapping[str, typing.Any]


def _items(member: Member_, key: str) -> Iterable[Mapping[str, typing.Any]]:
    return member.get(key) or ()


def _remaining(lot: Mapping[str, typing.Any]) -> int:
    return int(lot.get("points") or 0) - int(lot.get("redeemed") or 0)


def next_expiry_sql(now: datetime) -> ColumnElement[typing.Any]:
    """The earliest ``expires_at`` after ``now`` of the member's lots with points left, or NULL."""
    return (
        select(func.min(PointLot.expires_at))
        .where(
            PointLot.member_id == Member.id,
            PointLot.points > PointLot.redeemed,
            PointLot.expires_at > now,
        )
        .scalar_subquery()
    )


def next_expiry_value(member: Member_, now: datetime) -> datetime | None:
    """The Python twin of :func:`next_expiry_sql`."""
    dates = [
        lot["expires_at"]
        for lot in _items(member, "lots")
        if _remaining(lot) > 0 and lot.get("expires_at") is not None and lot["expires_at"] > now
    ]
    return min(dates, default=None)


class _NeverNull(TypeDecorator[int]):
    """An integer that is never NULL: ``IS NOT NULL`` on it compiles to nothing (TRUE).

    Every operator guards its value with ``IS NOT NULL`` (the NULL rule). On
    the coalesced points-expiring sum that guard is always true, yet it
    repeated the correlated subquery, so PostgreSQL ran it twice per member.
    """

    impl = Integer
    cache_ok = True

    class comparator_factory(Integer.Comparator[int]):  # SQLAlchemy's hook name
        def is_not(self, other: typing.Any) -> typing.Any:
            return true() if other is None else super().is_not(other)


def _expiring_lots(within: timedelta, now: datetime) -> list[ColumnElement[bool]]:
    """Lots with points left (each adds at least 1) expiring in ``(now, now + within]``."""
    return [
        PointLot.points > PointLot.redeemed,
        PointLot.expires_at > now,
        PointLot.expires_at <= now + within,
    ]


def points_expiring_sql(within: timedelta, now: datetime) -> ColumnElement[typing.Any]:
    """Points left in lots expiring in ``(now, now + within]``; 0 when there are none.

    Typed as never NULL, so an operator's ``IS NOT NULL`` guard adds no second subquery.
    """
    total = (
        select(func.sum(PointLot.points - PointLot.redeemed))
        .where(PointLot.member_id == Member.id, *_expiring_lots(within, now))
        .scalar_subquery()
    )
    return func.coalesce(total, 0, type_=_NeverNull())


def points_expiring_members(
    within: timedelta,
    now: datetime,
    test: typing.Callable[[ColumnElement[typing.Any]], ColumnElement[bool]],
) -> Select[int]:
    """The members with lots expiring in ``(now, now + within]`` whose sum passes ``test``.

    One ``GROUP BY member_id`` over the lots in the window. A member without
    such lots is in no group, although :func:`points_expiring_sql` gives them
    0: the caller decides about 0 itself (see ``segments._compile``). The sum
    is typed as never NULL (a group has at least one lot), like the per-member
    form, so ``test`` may be an operator's guarded comparison.
    """
    total = func.sum(PointLot.points - PointLot.redeemed, type_=_NeverNull())
    return (
        select(PointLot.member_id.label("member_id"))
        .where(*_expiring_lots(within, now))
        .group_by(PointLot.member_id)
        .having(test(total))
    )


def points_expiring_value(member: Member_, within: timedelta, now: datetime) -> int:
    """The Python twin of :func:`points_expiring_sql`."""
    return sum(
        _remaining(lot)
        for lot in _items(member, "lots")
        if _remaining(lot) > 0
        and lot.get("expires_at") is not None
        and now < lot["expires_at"] <= now + within
    )


def reachable_sql(channel: str) -> ColumnElement[bool]:
    """The member can be reached on ``channel`` as far as SQL can tell (see the module doc)."""
    if channel == "sms":
        return e164_sql(Member.phone.expression)
    if channel == "email":
        return and_(Member.email.is_not(None), Member.email != literal("", String))
    if channel == "push":
        return _exists_for_member(push_holders())
    if channel == "direct_mail":
        filled = [
            stripped_sql(part.expression) != literal("", String)
            for part in (Member.address_line1, Member.address_city, Member.address_zip)
        ]
        country = stripped_sql(Member.address_country.expression)
        state_ok = or_(
            country.not_in([literal(us, String) for us in _US]),
            stripped_sql(Member.address_state.expression) != literal("", String),
        )
        return and_(*filled, country != literal("", String), state_ok)
    raise ValueError(f"unknown channel {channel!r}")


def push_holders() -> Select[int]:
    """The members with a push token not revoked (``reachable: push``), with repeats."""
    return select(PushToken.member_id.label("member_id")).where(PushToken.revoked_at.is_(None))


def _exists_for_member(members: Select[int]) -> ColumnElement[bool]:
    """``EXISTS`` a row of ``members`` (a set query on ``X.member_id``) for this member."""
    column = members.selected_columns[0]
    return members.where(column == Member.id).exists()


def reachable_value(member: Member_, channel: str) -> bool:
    """The Python twin of :func:`reachable_sql`."""
    if channel == "sms":
        return is_e164(member.get("phone"))
    if channel == "email":
        return bool(member.get("email"))
    if channel == "push":
        return any(token.get("revoked_at") is None for token in _items(member, "push_tokens"))
    if channel == "direct_mail":
        parts = [stripped(member.get(f"address_{part}")) for part in ("line1", "city", "zip")]
        country = stripped(member.get("address_country"))
        state_ok = country not in _US or stripped(member.get("address_state")) != ""
        return all(parts) and country != "" and state_ok
    raise ValueError(f"unknown channel {channel!r}")


def consented_sql(channel: str, purpose: str) -> ColumnElement[bool]:
    """Marketing needs an opt-in row on ``channel``; service and transactional no opt-out row."""
    wanted = ConsentStatus.OPTED_IN if purpose == "marketing" else ConsentStatus.OPTED_OUT
    row = _exists_for_member(_consent_rows(channel, wanted))
    return row if purpose == "marketing" else not_(row)


def _consent_rows(channel: str, status: ConsentStatus) -> Select[int]:
    return select(Consent.member_id.label("member_id")).where(
        Consent.channel == literal(channel, String),
        Consent.status == literal(status.value, String),
    )


def opted_in(channel: str) -> Select[int]:
    """The members opted in on ``channel`` (``consented`` for marketing)."""
    return _consent_rows(channel, ConsentStatus.OPTED_IN)


def consented_value(member: Member_, channel: str, purpose: str) -> bool:
    """The Python twin of :func:`consented_sql`; ``consents`` maps channel to status."""
    status = (member.get("consents") or {}).get(channel)
    if purpose == "marketing":
        return bool(status == ConsentStatus.OPTED_IN)
    return bool(status != ConsentStatus.OPTED_OUT)


def received_sql(
    campaign: str, within_last: timedelta | None, now: datetime
) -> ColumnElement[bool]:
    """A delivery of ``campaign`` was sent or delivered (with ``sent_at`` in the window)."""
    return _exists_for_member(receivers(campaign, within_last, now))


def receivers(campaign: str, within_last: timedelta | None, now: datetime) -> Select[int]:
    """The members :func:`received_sql` holds for, with repeats."""
    conditions = [
        Delivery.campaign_id == Campaign.id,
        Campaign.name == literal(campaign, String),
        Delivery.status.in_([literal(s, String) for s in RECEIVED_STATUSES]),
    ]
    if within_last is not None:
        conditions += [Delivery.sent_at >= now - within_last, Delivery.sent_at <= now]
    return select(Delivery.member_id.label("member_id")).where(*conditions)


def received_value(
    member: Member_, campaign: str, within_last: timedelta | None, now: datetime
) -> bool:
    """The Python twin of :func:`received_sql`; ``received`` lists {campaign, status, sent_at}."""
    for item in _items(member, "received"):
        if item.get("campaign") != campaign or item.get("status") not in RECEIVED_STATUSES:
            continue
        if within_last is None:
            return True
        sent_at = item.get("sent_at")
        if sent_at is not None and now - within_last <= sent_at <= now:
            return True
    return False
