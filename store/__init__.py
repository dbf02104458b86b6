"""The store: the source of truth for members, campaigns and every delivery.

Models (``store.models``), engines and sessions (``store.engine``), page-sized
inserts and id lists as each database runs them fastest (``store.bulk``), Alembic
migrations (``store.migrate``) and member imports (``store.importer``). The
store imports nothing else of loyalcast's.
"""

from .clock import Clock, set_clock, utcnow
from .engine import affected_rows, insert_ignore, make_engine, make_sessionmaker
from .importer import (
    ImportMode,
    ImportReport,
    MemberImportError,
    RowError,
    import_members,
)
from .migrate import current_revision, upgrade
from .models import (
    Base,
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    Consent,
    ConsentEvent,
    ConsentStatus,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    HouseholdClaim,
    Member,
    PointLot,
    ProviderEvent,
    PushToken,
    RunStatus,
)

__all__ = [
    "Base",
    "Campaign",
    "CampaignRun",
    "CampaignStatus",
    "CampaignVersion",
    "Clock",
    "Consent",
    "ConsentEvent",
    "ConsentStatus",
    "Delivery",
    "DeliveryStatus",
    "Enrollment",
    "EnrollmentStatus",
    "HouseholdClaim",
    "ImportMode",
    "ImportReport",
    "Member",
    "MemberImportError",
    "PointLot",
    "ProviderEvent",
    "PushToken",
    "RowError",
    "RunStatus",
    "affected_rows",
    "current_revision",
    "import_members",
    "insert_ignore",
    "make_engine",
    "make_sessionmaker",
    "set_clock",
    "upgrade",
    "utcnow",
]
