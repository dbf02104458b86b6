"""Campaign rules checked at send time against the program of today, shared by the rechecks.

A rule was valid against the program when its campaign was stored; the
policy file may since have dropped or retyped an attribute it names. A
recheck that finds its version's rule no longer parses fails those rows
(reason ``rule_error``, the detail naming the rule and the way back) and
lets the rest of the batch go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from segments import Rule, RuleError, compile_rule
from store import Delivery, DeliveryStatus, Member

from .compose import Closed
from .runtime import LoadedVersion

__all__ = ["RULE_ERROR", "matching", "rule_error_rows"]

log = structlog.get_logger(__name__)

#: The reason on rows failed because one of their campaign's rules no longer parses.
RULE_ERROR = "rule_error"


def matching(session: Session, rule: Rule, member_ids: set[int], now: datetime) -> set[int]:
    """The members among ``member_ids`` that match ``rule`` now (one query)."""
    if not member_ids:
        return set()
    return set(
        session.scalars(
            select(Member.id).where(Member.id.in_(member_ids), compile_rule(rule, now=now))
        )
    )


def rule_error_rows(
    version: LoadedVersion, rows: Sequence[Delivery], error: RuleError
) -> list[Closed]:
    """Fail ``rows``: a rule of their campaign version no longer parses (``error``)."""
    detail = (
        f"campaign {version.campaign_name} v{version.version}: {error}; "
        "the program no longer allows this rule (fix its attributes or the campaign, "
        f"then: loyalcast deliveries retry --campaign {version.campaign_name} "
        f"--reason {RULE_ERROR})"
    )
    log.error(
        "campaign rule no longer parses",
        campaign=version.campaign_name,
        version=version.version,
        rule=error.path,
        problem=error.problem,
        rows=len(rows),
    )
    return [Closed(row.id, DeliveryStatus.FAILED, RULE_ERROR, detail) for row in rows]
