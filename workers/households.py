"""One direct-mail piece per household and campaign run, across every worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels import Message
from channels.direct_mail import household_key
from store import DeliveryStatus, HouseholdClaim, insert_ignore

from .ledger import closed_entry

__all__ = ["claim_households"]


def claim_households(
    session: Session, chunk: list[Message], now: datetime
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Give each household one direct-mail piece per run; return the rest as suppressed.

    Every piece claims ``(run, household)`` with INSERT ... ON CONFLICT DO
    NOTHING; the claim that landed first, in any worker, owns the household.
    A piece whose household another delivery owns is suppressed, naming it.
    """
    keyed = [
        (m, household_key(m.metadata["address"]))
        for m in chunk
        if m.metadata.get("run_id") is not None and "address" in m.metadata
    ]
    if not keyed:
        return chunk, []
    dialect = session.get_bind().dialect.name
    session.execute(
        insert_ignore(
            dialect,
            HouseholdClaim,
            [
                {
                    "run_id": m.metadata["run_id"],
                    "household_key": key,
                    "delivery_id": m.delivery_id,
                    "claimed_at": now,
                }
                for m, key in keyed
            ],
            ["run_id", "household_key"],
        )
    )
    owners = {
        (run_id, key): delivery_id
        for run_id, key, delivery_id in session.execute(
            select(
                HouseholdClaim.run_id, HouseholdClaim.household_key, HouseholdClaim.delivery_id
            ).where(
                HouseholdClaim.run_id.in_({m.metadata["run_id"] for m, _ in keyed}),
                HouseholdClaim.household_key.in_({key for _, key in keyed}),
            )
        )
    }
    duplicates = {
        m.delivery_id: owners[(m.metadata["run_id"], key)]
        for m, key in keyed
        if owners[(m.metadata["run_id"], key)] != m.delivery_id
    }
    kept = [m for m in chunk if m.delivery_id not in duplicates]
    closed = [
        closed_entry(
            did, DeliveryStatus.SUPPRESSED, "household", f"same address as delivery {owner}"
        )
        for did, owner in duplicates.items()
    ]
    return kept, closed
