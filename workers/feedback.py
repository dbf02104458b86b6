"""The store side of provider feedback: consent changes, delivery statuses, event dedupe.

Used by the api (webhooks, inbound SMS keywords, unsubscribe links) and by the
deliver job (Twilio 21610 means "opted out"). Each function works inside the
caller's transaction and commits nothing, so a webhook carrying many events
applies them all or none.

Rules kept here:

- **Consent** (:func:`set_consent`): the ``consents`` row is the current
  state; a ``consent_events`` row is appended only when the status really
  changes, so a repeated STOP leaves one audit row. The last change wins
  whatever its ``at`` (an opt-out is never discarded for arriving late). The
  deliver job reads consent just before sending, so an opt-out wins at once.
- **Status** (:func:`apply_provider_status`): a provider's report moves a
  delivery forward only (DESIGN.md §3), and only a delivery that reached the
  provider (``sent``, or ``unknown`` after an ambiguous send): ``delivered``,
  ``failed`` and ``bounced`` replace ``sent``/``unknown``; a late ``sent``
  may replace ``unknown``; nothing replaces ``delivered``. A report that
  names the delivery by our own id (SendGrid's ``delivery_id`` argument,
  Twilio's ``?delivery=`` in the status callback URL) may also move a row
  still ``sending``: the provider can report on a message before the worker
  that sent it has recorded the provider's answer (a Twilio chunk's SIDs are
  written once all its requests are answered). The worker's record then
  keeps the reported status and adds the provider's id
  (:func:`workers.outcomes.record_outcomes`).
- **Dedupe** (:func:`record_event_once`): a provider event id is recorded in
  ``provider_events`` with INSERT ... ON CONFLICT DO NOTHING; only the first
  request carrying it gets ``True``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from store import (
    Consent,
    ConsentEvent,
    ConsentStatus,
    Delivery,
    DeliveryStatus,
    Member,
    affected_rows,
    insert_ignore,
    utcnow,
)
from store.models import ProviderEvent

__all__ = [
    "FEEDBACK_STATUSES",
    "apply_provider_status",
    "find_member_by_email",
    "find_member_by_phone",
    "find_members_by_email",
    "find_members_by_phone",
    "record_event_once",
    "set_consent",
]

#: Statuses a provider may report, and the statuses each may replace.
FEEDBACK_STATUSES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    new: frozenset(
        old
        for old in (DeliveryStatus.UNKNOWN, DeliveryStatus.SENT)
        if old.rank < new.rank  # forward only
    )
    for new in (
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.BOUNCED,
    )
}

_REASON_LENGTH = 64  # deliveries.reason is String(64)
_EVENT_ID_LENGTH = 128  # provider_events.event_id is String(128)


def set_consent(
    session: Session,
    member_id: int,
    channel: str,
    status: ConsentStatus | str,
    *,
    source: str,
    detail: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Set a member's consent on a channel, with an audit row when it changes.

    Safe under concurrency: the row is created with INSERT ... ON CONFLICT DO
    NOTHING, then changed with an UPDATE guarded by ``status <> :status``, so
    two requests saying the same thing at once record one change.

    Args:
        session: the caller's session (nothing is committed here).
        member_id: an existing member's id.
        channel: ``sms``, ``email``, ``push`` or ``direct_mail``.
        status: ``opted_in`` or ``opted_out``.
        source: where the change came from, e.g. ``sms-keyword``.
        detail: for people, e.g. the keyword the member sent.
        at: when it happened; now by default.

    Returns:
        Whether the status changed (and an event was appended).
    """
    status = ConsentStatus(status)
    at = at or utcnow()
    values = {"status": status, "source": source, "updated_at": at}
    created = session.execute(
        insert_ignore(_dialect(session), Consent, None, ["member_id", "channel"])
        .values(member_id=member_id, channel=channel, **values)
        .returning(Consent.member_id)
    ).first()
    changed = created is not None or (
        affected_rows(
            session.execute(
                update(Consent)
                .where(
                    Consent.member_id == member_id,
                    Consent.channel == channel,
                    Consent.status != status,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        )
        > 0
    )
    if changed:
        session.add(
            ConsentEvent(
                member_id=member_id,
                channel=channel,
                status=status,
                source=source,
                detail=detail,
                occurred_at=at,
            )
        )
        session.flush()
    return changed


def find_members_by_phone(session: Session, e164: str) -> Sequence[Member]:
    """Every member (not deleted) with this E.164 phone number, oldest first."""
    return session.scalars(
        select(Member)
        .where(Member.phone == e164.strip(), Member.deleted_at.is_(None))
        .order_by(Member.id)
    ).all()


def find_member_by_phone(session: Session, e164: str) -> Member | None:
    """The oldest member (not deleted) with this E.164 phone number, if any."""
    return next(iter(find_members_by_phone(session, e164)), None)


def find_members_by_email(session: Session, email: str) -> Sequence[Member]:
    """Every member (not deleted) with this email address, compared case-insensitively."""
    return session.scalars(
        select(Member)
        .where(func.lower(Member.email) == email.strip().lower(), Member.deleted_at.is_(None))
        .order_by(Member.id)
    ).all()


def find_member_by_email(session: Session, email: str) -> Member | None:
    """The oldest member (not deleted) with this email address (case-insensitive), if any."""
    return next(iter(find_members_by_email(session, email)), None)


def apply_provider_status(
    session: Session,
    *,
    delivery_id: int | None = None,
    provider_message_id: str | None = None,
    status: DeliveryStatus,
    reason: str | None = None,
    detail: str | None = None,
) -> bool:
    """Move a delivery forward to what its provider reported, in one conditional UPDATE.

    Args:
        session: the caller's session.
        delivery_id: the delivery, when the provider echoes our id (SendGrid's
            custom argument, Twilio's status callback URL). A row still
            ``sending`` can then move too.
        provider_message_id: the provider's id for it (Twilio's MessageSid).
            With both, a row whose provider id is recorded must have this one;
            one not recorded yet (``sending``, or ``unknown`` after a lost
            answer) matches by ``delivery_id`` alone.
        status: ``delivered``, ``failed``, ``bounced`` or ``sent``.
        reason: machine-readable, e.g. ``provider:30003``; cut to the column's
            length. ``None`` clears an earlier reason (``lease_expired``).
        detail: for people.

    Returns:
        Whether the delivery moved (``False``: unknown id, or the row is
        already as far or further along).

    Raises:
        ValueError: neither id was given, or ``status`` is not one a provider reports.
    """
    if delivery_id is None and provider_message_id is None:
        raise ValueError("apply_provider_status needs a delivery_id or a provider_message_id")
    status = DeliveryStatus(status)
    if status not in FEEDBACK_STATUSES:
        raise ValueError(f"a provider cannot report {status!r}")
    movable = set(FEEDBACK_STATUSES[status])
    match = []
    if delivery_id is None:
        match.append(Delivery.provider_message_id == provider_message_id)
    else:
        # Named by our id, the row may still be ``sending``, its provider id
        # not yet recorded; a stored provider id must still agree.
        match.append(Delivery.id == delivery_id)
        movable.add(DeliveryStatus.SENDING)
        if provider_message_id is not None:
            match.append(
                or_(
                    Delivery.provider_message_id == provider_message_id,
                    Delivery.provider_message_id.is_(None),
                )
            )
    result = session.execute(
        update(Delivery)
        .where(*match, Delivery.status.in_(sorted(movable)))
        .values(
            status=status,
            reason=reason[:_REASON_LENGTH] if reason else None,
            detail=detail,
            # A row reported on while sending is no longer the sweeper's to expire;
            # its owner token stays, for the worker's record.
            lease_until=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return affected_rows(result) > 0


def record_event_once(session: Session, provider: str, event_id: str) -> bool:
    """Remember a provider event; ``True`` only the first time it is seen.

    Args:
        session: the caller's session; the record commits (or rolls back)
            with the changes the event causes.
        provider: ``twilio``, ``sendgrid``, ...
        event_id: the provider's id of the event (e.g. ``sg_event_id``).

    Returns:
        ``True`` when the event is new and should be applied.
    """
    if len(event_id) > _EVENT_ID_LENGTH:  # longer than any provider's; keep it unique anyway
        event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    row = session.execute(
        insert_ignore(_dialect(session), ProviderEvent, None, ["provider", "event_id"])
        .values(provider=provider, event_id=event_id, received_at=utcnow())
        .returning(ProviderEvent.id)
    ).first()
    return row is not None


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name
