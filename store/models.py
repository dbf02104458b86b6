"""SQLAlchemy 2.0 models: members and what they own, campaigns, runs, and the delivery ledger.

Instants are stored in UTC (``UTCDateTime`` keeps them aware in Python and
naive-UTC on SQLite); JSON columns are JSONB on PostgreSQL.

The ``deliveries`` table is both the outbox and the ledger: a row exists
before any job names it, its ``dedupe_key`` is unique (DESIGN.md §2), and its
``status`` only moves forward through :class:`DeliveryStatus`.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .clock import utcnow

__all__ = [
    "Base",
    "Campaign",
    "CampaignRun",
    "CampaignStatus",
    "CampaignVersion",
    "Consent",
    "ConsentEvent",
    "ConsentStatus",
    "Delivery",
    "DeliveryStatus",
    "Enrollment",
    "EnrollmentStatus",
    "HouseholdClaim",
    "Member",
    "PointLot",
    "ProviderEvent",
    "PushToken",
    "RunStatus",
    "Segment",
    "SegmentMember",
    "UTCDateTime",
    "utcnow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """An instant: aware UTC in Python, stored as UTC (naive on SQLite, timestamptz on PG)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given where an instant is stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigID = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DeliveryStatus(enum.StrEnum):
    """Where a delivery is in its lifecycle (DESIGN.md §3)."""

    PENDING = "pending"
    """Written by planning; waiting for a deliver job."""
    DEFERRED = "deferred"
    """Waiting until ``not_before`` (quiet hours, a cap slot, a provider's retry-after)."""
    SENDING = "sending"
    """Claimed with a lease by one worker, which is calling the provider."""
    UNKNOWN = "unknown"
    """A lease expired during sending: the provider may or may not have it."""
    SENT = "sent"
    """The provider accepted it."""
    DELIVERED = "delivered"
    """The provider reported delivery."""
    FAILED = "failed"
    """Permanently failed, or retries exhausted; ``reason`` says why."""
    BOUNCED = "bounced"
    """The provider reported a bounce."""
    SUPPRESSED = "suppressed"
    """Not sent on purpose (consent, reachability, cap, cancel); ``reason`` says why."""

    @property
    def rank(self) -> int:
        """Order of progress: a status may only be replaced by one of higher rank."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        """No worker will touch a row in this status again."""
        return self in _FINAL

    @property
    def is_open(self) -> bool:
        """A worker or the sweeper still has work to do on a row in this status."""
        return not self.is_final


_RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.DEFERRED: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.UNKNOWN: 2,
    DeliveryStatus.SENT: 3,
    DeliveryStatus.SUPPRESSED: 4,
    DeliveryStatus.FAILED: 4,
    DeliveryStatus.DELIVERED: 5,
    DeliveryStatus.BOUNCED: 5,
}
_FINAL = frozenset(
    {
        DeliveryStatus.UNKNOWN,
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.SUPPRESSED,
    }
)


class CampaignStatus(enum.StrEnum):
    """Whether a campaign's deliveries may still go out."""

    ACTIVE = "active"
    """Runs are planned and delivered."""
    PAUSED = "paused"
    """Nothing is planned or sent until it is resumed."""
    CANCELLED = "cancelled"
    """Nothing more is sent; open deliveries are suppressed with reason ``cancelled``."""


class RunStatus(enum.StrEnum):
    """Where one campaign run (one occurrence of a schedule) is."""

    SCHEDULED = "scheduled"
    """Waiting for ``due_at``; the scheduler will claim it."""
    PLANNING = "planning"
    """Claimed; a plan job is writing its delivery rows."""
    PLANNED = "planned"
    """Every delivery row is written; deliver jobs are doing the rest."""
    COMPLETED = "completed"
    """Every delivery is final."""
    CANCELLED = "cancelled"
    """Cancelled before it completed."""
    FAILED = "failed"
    """Planning stopped on a problem an operator must fix (``error`` says which);
    ``loyalcast campaigns replan`` schedules it again once fixed."""


class ConsentStatus(enum.StrEnum):
    """A member's standing permission on one channel."""

    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20), doc="E.164")
    locale: Mapped[str] = mapped_column(String(16), default="en")
    time_zone: Mapped[str | None] = mapped_column(String(64), doc="IANA name")
    tier: Mapped[str | None] = mapped_column(String(32))
    points_balance: Mapped[int] = mapped_column(Integer, default=0)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purchases_count: Mapped[int] = mapped_column(Integer, default=0)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    address_line1: Mapped[str | None] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    address_city: Mapped[str | None] = mapped_column(String(100))
    address_state: Mapped[str | None] = mapped_column(String(100))
    address_zip: Mapped[str | None] = mapped_column(String(20))
    address_country: Mapped[str | None] = mapped_column(String(2), doc="ISO 3166-1 alpha-2")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(None, "tier"),
        Index(None, "enrolled_at"),
    )


class PointLot(Base):
    """Points earned together that expire together."""

    __tablename__ = "point_lots"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    points: Mapped[int] = mapped_column(Integer)
    redeemed: Mapped[int] = mapped_column(Integer, default=0)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Covering on PostgreSQL (INCLUDE, migration 0006): the expiry scan and the
        # whole-audience points_expiring sum read a window of it without the table.
        Index(None, "expires_at", "member_id", postgresql_include=["points", "redeemed"]),
        Index(None, "member_id"),
    )


class Consent(Base):
    """A member's current consent on one channel; ``ConsentEvent`` holds its history."""

    __tablename__ = "consents"

    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsentEvent(Base):
    """One change of consent: who, what, when and through which source."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(
        String(64), doc="import, api, sms-keyword, unsubscribe, ..."
    )
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index(None, "member_id", "occurred_at"),)


class PushToken(Base):
    """A device registration: an FCM token or a Web Push subscription."""

    __tablename__ = "push_tokens"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), doc="fcm or webpush")
    token: Mapped[str] = mapped_column(String(1024), doc="FCM token or Web Push endpoint")
    keys: Mapped[dict[str, Any] | None] = mapped_column(JSONType, doc="Web Push p256dh/auth")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("kind", "token"),
        Index(None, "member_id"),
    )


class ProviderEvent(Base):
    """A provider callback event already applied, so a resent one is applied only once."""

    __tablename__ = "provider_events"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), doc="twilio, sendgrid, ...")
    event_id: Mapped[str] = mapped_column(String(128), doc="the provider's id, e.g. sg_event_id")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("provider", "event_id"),)


class HouseholdClaim(Base):
    """The one direct-mail piece a household gets per campaign run.

    Written with INSERT ... ON CONFLICT DO NOTHING before a piece is exported:
    the delivery whose claim lands owns the household; every other delivery
    of the run to the same address is suppressed (reason ``household``).
    """

    __tablename__ = "household_claims"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("campaign_runs.id", ondelete="CASCADE"), primary_key=True
    )
    household_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.ACTIVE)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class CampaignVersion(Base):
    """An immutable snapshot of a campaign: its validated spec and its template sources."""

    __tablename__ = "campaign_versions"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    templates: Mapped[dict[str, Any]] = mapped_column(JSONType, doc="{channel: {part: source}}")
    source: Mapped[str] = mapped_column(Text, doc="the campaign file as written")
    digest: Mapped[str] = mapped_column(String(64), doc="sha256 of source")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("campaign_id", "version"),)


class CampaignRun(Base):
    """One occurrence of a campaign's schedule; its deliveries share its dedupe prefix."""

    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    campaign_version_id: Mapped[int] = mapped_column(ForeignKey("campaign_versions.id"))
    occurrence: Mapped[str] = mapped_column(String(64), doc="e.g. the scheduled instant")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.SCHEDULED)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    planned_through: Mapped[int] = mapped_column(
        BigID, default=0, doc="highest member id planned so far (resumes a killed plan)"
    )
    planned_count: Mapped[int] = mapped_column(Integer, default=0)
    planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(
        Text, doc="why planning failed (status failed): the campaign, the rule, the fix"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("campaign_id", "occurrence"),
        Index(None, "status", "due_at"),
    )


# On PostgreSQL the indexes that find open work hold only the rows they are
# asked for (partial indexes, migration 0008): waiting rows for the sweeper,
# sending rows for the lease expiry, failed rows for `deliveries retry`, rows
# with a provider id for webhooks, sequence steps by enrollment. A row leaves
# them once it is sent, so the ledger's final rows cost no entries there and a
# message's three writes (planned, claimed, recorded) insert 16 index entries
# instead of 27. Each query of open work names the status or column that the
# predicate names, which is how PostgreSQL proves it may use the index
# (tests/test_store_migrations.py). SQLite keeps whole indexes.
_WAITING = "status IN ('pending', 'deferred')"
_WAITING_OR_FAILED = "status IN ('pending', 'deferred', 'failed')"


class Delivery(Base):
    """One message to one member: the outbox row before sending, the ledger entry after."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    campaign_version_id: Mapped[int] = mapped_column(ForeignKey("campaign_versions.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(16))
    channels: Mapped[str] = mapped_column(String(64), doc="candidate channels, preference order")
    channel: Mapped[str | None] = mapped_column(String(16), doc="the channel it went out on")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resend_on_ambiguous: Mapped[bool] = mapped_column(Boolean, default=False)
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), doc="a welcome-sequence step's enrollment"
    )
    payload: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType,
        doc="what the row's trigger was, rechecked at send time and given to the template "
        "(an expiry reminder's date and points, a sequence's step)",
    )

    __table_args__ = (
        Index(None, "enrollment_id", postgresql_where=text("enrollment_id IS NOT NULL")),
        Index(None, "status", "enqueued_at", "not_before", postgresql_where=text(_WAITING)),
        Index(None, "status", "not_before", postgresql_where=text(_WAITING_OR_FAILED)),
        Index(None, "status", "lease_until", postgresql_where=text("status = 'sending'")),
        Index(None, "run_id", "status"),
        Index(None, "member_id", "created_at"),
        Index(
            None, "provider_message_id", postgresql_where=text("provider_message_id IS NOT NULL")
        ),
    )


class EnrollmentStatus(enum.StrEnum):
    """Where a member is in a welcome sequence."""

    ACTIVE = "active"
    """Steps are still to come."""
    FINISHED = "finished"
    """Every step was sent or skipped."""
    EXITED = "exited"
    """The member left early (an exit rule, every channel opted out, deleted)."""


class Enrollment(Base):
    """One member's pass through one welcome sequence.

    ``cycle`` counts passes: a member re-enrolled after finishing starts cycle
    2 only when the campaign says ``restart: true``. Each step's delivery row
    is keyed ``sequence:<enrollment id>:<step>`` (DESIGN.md §2).
    """

    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    campaign_version_id: Mapped[int] = mapped_column(ForeignKey("campaign_versions.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    cycle: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(32), doc="api, import, event, ...")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exit_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("campaign_id", "member_id", "cycle"),
        Index(None, "member_id"),
        Index(None, "status", "campaign_id"),
    )


class Segment(Base):
    """A saved segment: a named rule, and when its members were last evaluated."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, doc="a slug")
    rule: Mapped[dict[str, Any]] = mapped_column(JSONType, doc="the rule as written")
    attributes: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict, doc="the declared attribute types the rule was checked with"
    )
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SegmentMember(Base):
    """One member of a saved segment as of its last evaluation (``Segment.evaluated_at``)."""

    __tablename__ = "segment_members"

    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (Index(None, "member_id"),)
