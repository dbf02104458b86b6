"""A campaign run's progress and when it should finish (``campaigns status``).

Per run: rows planned, sent (handed to a provider: ``sent_at`` is set, whatever
came after), open (a worker or the sweeper still has work: pending, deferred,
sending), and how many of the open rows wait for a moment still to come
(member-local wall time, spread, quiet hours, a cap slot).

The ETA of a run with open rows:

- rows ready now drain at the run's **measured throughput** (rows sent in the
  last :data:`THROUGHPUT_WINDOW`, over the time since the first of them); with
  nothing sent yet, at the **configured provider rates** (``LOYALCAST_*_RATE``:
  each row counted on its first candidate channel, providers draining in
  parallel; direct mail has no rate and does not hold the ETA back);
- rows deferred to a future moment cannot finish before the last of them is
  due, so then the ETA is that moment, if it is later.

A paused campaign has no ETA. These are estimates for an operator, not promises:
a provider's Retry-After or a cap changes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from loyalcast.settings import Settings
from store import Delivery, DeliveryStatus

from .ledger import HELD

__all__ = ["THROUGHPUT_WINDOW", "RunProgress", "provider_rates", "run_progress"]

#: How far back throughput is measured.
THROUGHPUT_WINDOW = timedelta(minutes=5)
_OPEN = [s for s in DeliveryStatus if s.is_open]


def provider_rates(settings: Settings) -> dict[str, float | None]:
    """Messages per second each channel's provider is allowed (None: not rate limited)."""
    return {
        "sms": settings.twilio_rate,
        "email": settings.sendgrid_rate,
        "push": settings.fcm_rate,
        "direct_mail": None,
    }


@dataclass(frozen=True, kw_only=True)
class RunProgress:
    """One run's counts and its estimated finish."""

    planned: int
    sent: int
    """Rows handed to a provider (``sent_at`` set)."""
    open: int
    """Rows still to be sent or decided."""
    waiting: int
    """Open rows deferred to a moment still to come."""
    last_due: datetime | None
    """When the last waiting row is due."""
    rate: float | None
    """Rows per second the ETA assumes (None: nothing to send, or unknown)."""
    rate_source: str | None
    """``measured`` (recent sends) or ``configured`` (provider rates)."""
    eta: datetime | None
    """When the run should have no open row left (None: done, paused, or unknown)."""
    eta_basis: str | None
    """``measured``, ``configured`` or ``last row due``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_progress(
    session: Session,
    runs: Sequence[tuple[int, int]],
    *,
    rates: Mapping[str, float | None],
    now: datetime,
    paused: bool = False,
) -> dict[int, RunProgress]:
    """Progress of each run in ``runs`` (``(run id, planned count)``), by run id."""
    ids = [run_id for run_id, _ in runs]
    if not ids:
        return {}
    sent: dict[int, int] = dict.fromkeys(ids, 0)
    opened: dict[int, int] = dict.fromkeys(ids, 0)
    for run_id, status, with_sent_at, n in session.execute(
        select(Delivery.run_id, Delivery.status, func.count(Delivery.sent_at), func.count())
        .where(Delivery.run_id.in_(ids))
        .group_by(Delivery.run_id, Delivery.status)
    ):
        sent[_id(run_id)] += int(with_sent_at)
        if status in _OPEN:
            opened[_id(run_id)] += int(n)
    live = [run_id for run_id in ids if opened[run_id]]
    waiting = _waiting(session, live, now)
    ready = _ready_by_channel(session, live, now)
    measured = _measured(session, live, now)
    result = {}
    for run_id, planned in runs:
        count, last_due = waiting.get(run_id, (0, None))
        rate, source, eta, basis = _estimate(
            opened[run_id], ready.get(run_id, {}), measured.get(run_id), rates, now, paused
        )
        if last_due is not None and not paused and (eta is None or last_due > eta):
            eta, basis = last_due, "last row due"
        result[run_id] = RunProgress(
            planned=planned,
            sent=sent[run_id],
            open=opened[run_id],
            waiting=count,
            last_due=last_due,
            rate=rate,
            rate_source=source,
            eta=eta,
            eta_basis=basis,
        )
    return result


def _id(run_id: int | None) -> int:
    """A run id from a query filtered on ``run_id IN (...)``: never NULL."""
    if run_id is None:
        raise ValueError("a delivery row without a run where one was selected by run")
    return run_id


def _waiting(
    session: Session, ids: list[int], now: datetime
) -> dict[int, tuple[int, datetime | None]]:
    if not ids:
        return {}
    rows = session.execute(
        select(Delivery.run_id, func.count(), func.max(Delivery.not_before))
        .where(
            Delivery.run_id.in_(ids),
            Delivery.status == DeliveryStatus.DEFERRED,
            Delivery.not_before > now,
            or_(Delivery.reason.is_(None), Delivery.reason.not_in(HELD)),
        )
        .group_by(Delivery.run_id)
    )
    return {_id(run_id): (int(n), last) for run_id, n, last in rows}


def _ready_by_channel(session: Session, ids: list[int], now: datetime) -> dict[int, dict[str, int]]:
    """Open rows that may go now, per run and per the channel they will most likely take."""
    if not ids:
        return {}
    ready = or_(
        Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.SENDING)),
        and_(
            Delivery.status == DeliveryStatus.DEFERRED,
            or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
        ),
    )
    channel = func.coalesce(Delivery.channel, Delivery.channels)
    found: dict[int, dict[str, int]] = {}
    for run_id, channels, n in session.execute(
        select(Delivery.run_id, channel, func.count())
        .where(Delivery.run_id.in_(ids), ready)
        .group_by(Delivery.run_id, channel)
    ):
        first = str(channels).split(",")[0]
        per_channel = found.setdefault(_id(run_id), {})
        per_channel[first] = per_channel.get(first, 0) + int(n)
    return found


def _measured(session: Session, ids: list[int], now: datetime) -> dict[int, float]:
    """Rows per second sent recently, per run (runs that sent nothing lately are absent)."""
    if not ids:
        return {}
    rates: dict[int, float] = {}
    for run_id, n, first in session.execute(
        select(Delivery.run_id, func.count(), func.min(Delivery.sent_at))
        .where(Delivery.run_id.in_(ids), Delivery.sent_at >= now - THROUGHPUT_WINDOW)
        .group_by(Delivery.run_id)
    ):
        if first is not None:
            span = max((now - first).total_seconds(), 1.0)
            rates[_id(run_id)] = int(n) / span
    return rates


def _estimate(
    open_rows: int,
    ready: Mapping[str, int],
    measured: float | None,
    rates: Mapping[str, float | None],
    now: datetime,
    paused: bool,
) -> tuple[float | None, str | None, datetime | None, str | None]:
    """(rate, its source, ETA, its basis) for the rows ready now."""
    if paused or open_rows == 0:
        return None, None, None, None
    count = sum(ready.values())
    if measured:
        return measured, "measured", now + timedelta(seconds=count / measured), "measured"
    # Providers drain in parallel: the slowest channel decides.
    seconds = 0.0
    limited = 0
    for channel, n in ready.items():
        rate = rates.get(channel)
        if rate:
            seconds = max(seconds, n / rate)
            limited += n
    rate = limited / seconds if seconds else None
    return rate, "configured" if rate else None, now + timedelta(seconds=seconds), "configured"
