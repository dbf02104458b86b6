"""Bulk writes to the delivery ledger shared by the deliver job's steps.

Every write updates a page of rows, each with its own values, in one
statement (:func:`store.bulk.update_many`), guarded by the row's current
status (and, after a claim, by the claim's owner token), so a row another
worker has moved on is never moved back. Entries name the columns they set:
``{"id": ..., "status": ..., "reason": ..., "detail": ...}``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, or_
from sqlalchemy.orm import Session

from store import Delivery, DeliveryStatus, utcnow
from store.bulk import unindexed, update_many

__all__ = [
    "HELD",
    "HOLD",
    "OPEN",
    "RUN_FAILED",
    "DeliverResult",
    "closed_entry",
    "deferred_entry",
    "deliveries",
    "status_is",
    "write_closed",
    "write_deferred",
]

#: Rows a deliver job may still send.
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)

#: The reason on rows of a failed run held until it is planned again
#: (``deferred``, due in ten years): a triggered run's rows, written before
#: its plan narrows them, must not be sent un-narrowed by the sweeper.
RUN_FAILED = "run_failed"

#: Reasons of ``deferred`` rows that wait for an operator, not for a time.
HELD = ("paused", RUN_FAILED)

#: How far ahead such rows are due (never, in practice): resume or replan
#: makes them due at once.
HOLD = timedelta(days=3650)

#: The deliveries table, for Core UPDATEs of many rows.
deliveries = cast(Table, Delivery.__table__)


@dataclass
class DeliverResult:
    """Counts of what one deliver job did, by outcome."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n


def status_is(*statuses: str) -> Any:
    """``status = a OR status = b`` beside a page of keys.

    Not ``IN``: an expanding list cannot be used with executemany (SQLite's
    path of :func:`~store.bulk.update_many`). Through
    :func:`~store.bulk.unindexed`, so the page is found by key.
    """
    status = unindexed(deliveries.c.status)
    return or_(*(status == value for value in statuses))


def closed_entry(
    delivery_id: int, status: DeliveryStatus, reason: str, detail: str
) -> dict[str, Any]:
    return {"id": delivery_id, "status": status, "reason": reason, "detail": detail}


def write_closed(session: Session, entries: list[dict[str, Any]]) -> None:
    """Close open rows as suppressed or failed, with their reasons."""
    if not entries:
        return
    update_many(
        session, deliveries, entries, where=[status_is(*OPEN)], values={"updated_at": utcnow()}
    )


def deferred_entry(delivery_id: int, until: datetime, reason: str, detail: str) -> dict[str, Any]:
    """One row for :func:`write_deferred`."""
    return {"id": delivery_id, "not_before": until, "reason": reason, "detail": detail}


def write_deferred(session: Session, entries: list[dict[str, Any]]) -> None:
    """Defer open rows to their ``not_before``, with reasons; the sweeper picks them up when due."""
    if not entries:
        return
    update_many(
        session,
        deliveries,
        entries,
        where=[status_is(*OPEN)],
        values={"status": DeliveryStatus.DEFERRED, "enqueued_at": None, "updated_at": utcnow()},
    )
