"""What an enrollment writes (one delivery row per step) and when it is over.

Each step of a welcome sequence becomes one delivery row when the member
enrolls (:func:`step_rows`), keyed ``sequence:<enrollment>:<step>`` (plus
``:<channel>`` for ``channels: all``; DESIGN.md §2) and due at ``enrolled_at +
after``: ``deferred`` with reason ``scheduled`` until then, so the sweeper
enqueues it when its time comes, or ``pending`` when already due.

An active enrollment none of whose rows is still open (every step sent,
failed, skipped, or left ``unknown``) is over: :func:`finish_enrollments`
marks it ``finished``. The sweeper runs it on each pass, which catches every
way a last step can end; :func:`workers.sequences.enroll` runs it for the
members it is asked about, so a restart never waits for a sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from store import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, utcnow

from .campaigns import CampaignSpec
from .schedules import format_duration

__all__ = [
    "OPEN_STATUSES",
    "SequenceVersion",
    "finish",
    "finish_enrollments",
    "sequence_key",
    "step_rows",
]

#: Statuses in which a row still has work to do.
OPEN_STATUSES = [s for s in DeliveryStatus if s.is_open]


@dataclass(frozen=True)
class SequenceVersion:
    """The current version of a welcome sequence campaign, as enrollment uses it."""

    campaign_id: int
    name: str
    version_id: int
    spec: CampaignSpec


def sequence_key(enrollment_id: int, step: int, channel: str | None = None) -> str:
    """A sequence step's once-only key: (enrollment, step), plus the channel for ``all``."""
    key = f"sequence:{enrollment_id}:{step}"
    return f"{key}:{channel}" if channel else key


def step_rows(
    sequence: SequenceVersion,
    enrollment_id: int,
    member_id: int,
    enrolled_at: datetime,
    now: datetime,
    *,
    queued: bool,
) -> list[dict[str, Any]]:
    """The delivery rows of every step of one enrollment (see the module docstring)."""
    spec = sequence.spec
    steps = spec.steps or []
    rows: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        channels = spec.step_channels(step)
        per_channel = (step.channels if step.channels is not None else spec.channels) == "all"
        due_at = enrolled_at + step.after
        row: dict[str, Any] = {
            "campaign_id": sequence.campaign_id,
            "campaign_version_id": sequence.version_id,
            "run_id": None,
            "enrollment_id": enrollment_id,
            "member_id": member_id,
            "category": spec.category,
            "payload": {"step": index},
            "attempts": 0,
            "resend_on_ambiguous": spec.on_ambiguous == "resend",
            "not_before": due_at,
            "created_at": now,
            "updated_at": now,
        }
        if due_at > now:
            row |= {
                "status": DeliveryStatus.DEFERRED,
                "reason": "scheduled",
                "detail": f"step {index + 1} of {len(steps)}, "
                f"{format_duration(step.after)} after enrollment",
                "enqueued_at": None,
            }
        else:  # without a broker, enqueued_at NULL lets the next sweep enqueue it at once
            row |= {
                "status": DeliveryStatus.PENDING,
                "reason": None,
                "detail": None,
                "enqueued_at": now if queued else None,
            }
        if per_channel:
            rows.extend(
                row
                | {
                    "dedupe_key": sequence_key(enrollment_id, index, channel),
                    "channels": channel,
                    "channel": channel,
                }
                for channel in channels
            )
        else:
            rows.append(
                row
                | {
                    "dedupe_key": sequence_key(enrollment_id, index),
                    "channels": ",".join(channels),
                    "channel": None,
                }
            )
    return rows


def finish(session: Session, now: datetime, enrollment_ids: Iterable[int] | None) -> list[int]:
    """Mark active enrollments with no open row as finished; return their ids.

    With ``enrollment_ids`` the open rows are looked up by the ``enrollment_id``
    index first (a correlated NOT EXISTS over a fresh, unanalyzed table may be
    planned as a scan); without, one set-wise UPDATE covers every enrollment.
    """
    stmt = update(Enrollment).where(Enrollment.status == EnrollmentStatus.ACTIVE)
    if enrollment_ids is None:
        stmt = stmt.where(
            ~exists().where(
                Delivery.enrollment_id == Enrollment.id, Delivery.status.in_(OPEN_STATUSES)
            )
        )
    else:
        ids = set(enrollment_ids)
        still_open = session.scalars(
            select(Delivery.enrollment_id)
            .where(Delivery.enrollment_id.in_(ids), Delivery.status.in_(OPEN_STATUSES))
            .distinct()
        )
        ids.difference_update(still_open)
        if not ids:
            return []
        stmt = stmt.where(Enrollment.id.in_(ids))
    finished = stmt.values(status=EnrollmentStatus.FINISHED, ended_at=now).returning(Enrollment.id)
    return list(session.scalars(finished))


def finish_enrollments(session: Session, now: datetime | None = None) -> int:
    """Mark every active enrollment none of whose rows is open as finished; return how many.

    The sweeper calls this on each pass: it catches every way a last step can
    end (sent, failed, skipped by its condition, left ``unknown`` by a worker
    that died, suppressed by a cancel).
    """
    return len(finish(session, now or utcnow(), None))
