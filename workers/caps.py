"""Frequency caps held atomically across all workers in Redis, with the ledger as the record.

:class:`CapCounter` keeps one sorted set of delivery ids per (member, rule),
scored by the reservation's instant: a rolling window (``7d``) is one set
trimmed to the window on each use; a calendar day or ISO week has one set per
period of the member's own zone (``...:2026-12-01``, ``...:2026-W49``),
computed here, which expires after the period.

Reserving is ONE Lua script per message: it checks every rule that applies
and, only if all pass, adds the delivery id to each, so no two workers can
both take a member's last slot. A delivery id already counted passes again
(a retry does not take a second slot). ``transactional`` is never counted and
never touches Redis. :meth:`CapCounter.release` gives a slot back (a
permanent failure must not use up the cap).

Losing Redis never lets a member past a cap: every member has a marker key
(TTL longer than the longest window, refreshed on use) whose presence says
"these counters are complete". The script refuses to decide without it; the
counter then reads the member's recent deliveries from the ledger (status
sending, sent, delivered or unknown; :func:`recent_deliveries`), adds them
(``ZADD NX``: a union, never a reset) and sets the marker in one MULTI, and
tries again. Keys carry a fingerprint of each rule's scope, window and
categories, and the marker one of the whole rule set, so changing the rules
also rebuilds. Redis being unreachable raises ``redis.RedisError``: the
caller defers, it never sends uncounted.

Limits, written down: a reservation made just before Redis lost its data
whose delivery had not reached ``sending`` when the ledger was read is not in
the rebuilt counters (the window is the time between reserve and claim, a few
ms in the deliver job). Redis must not evict keys (``maxmemory-policy
noeviction``), or a counter could vanish while its marker stays.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import redis

from .cap_ledger import COUNTED_STATUSES, Ledger, LedgerEntry, ledger_from, recent_deliveries
from .program import DEFAULT_TIME_ZONE, CapRule
from .quiet_hours import local_midnight, resolve_zone

__all__ = [
    "COUNTED_STATUSES",
    "CapCounter",
    "CapRequest",
    "CapStateLost",
    "Capped",
    "Ledger",
    "LedgerEntry",
    "Reservation",
    "ledger_from",
    "recent_deliveries",
]

#: How far back the ledger is read for a calendar rule (a local day or week, with margin).
_CALENDAR_LOOKBACK = {"calendar_day": timedelta(days=2), "calendar_week": timedelta(days=8)}
#: Keys outlive what they must hold by this much.
_SLACK = timedelta(hours=1)
_MARKER_SLACK = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ATTEMPTS = 3

# KEYS[1] the member's marker, KEYS[2..] one set per rule.
# ARGV: now_ms, marker_ttl_ms, delivery_id, then per rule: limit, cutoff_ms ('' for a
# calendar period), ttl_ms. Returns {-1} without the marker, {1} when reserved, else
# {0, rule index, count, score of the entry that must leave first ('' for calendar), ...}.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local id = ARGV[3]
local reply = {0}
for i = 2, #KEYS do
  local arg = 4 + (i - 2) * 3
  local limit = tonumber(ARGV[arg])
  local cutoff = ARGV[arg + 1]
  if cutoff ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff) end
  if not redis.call('ZSCORE', KEYS[i], id) then
    local count = redis.call('ZCARD', KEYS[i])
    if count >= limit then
      local first = ''
      if cutoff ~= '' then
        first = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')[2]
      end
      table.insert(reply, i - 1)
      table.insert(reply, count)
      table.insert(reply, first)
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #reply > 1 then return reply end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[1], id)
  redis.call('PEXPIRE', KEYS[i], ARGV[4 + (i - 2) * 3 + 2])
end
return {1}
"""


@dataclass(frozen=True, kw_only=True)
class CapRequest:
    """One message that wants a slot: who, on which channel, of which category."""

    member_id: int
    channel: str
    category: str
    delivery_id: int
    time_zone: str | None = None


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """The message holds a slot in each of ``rules`` (none: nothing applied)."""

    member_id: int
    delivery_id: int
    rules: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Capped:
    """The message would pass ``rule``'s limit; the first slot may free at ``next_free_at``."""

    reason: ClassVar[str] = "frequency_cap"

    member_id: int
    delivery_id: int
    rule: CapRule
    count: int
    next_free_at: datetime

    @property
    def detail(self) -> str:
        """What the ledger records, e.g. ``frequency_cap: marketing-weekly 3/7d``."""
        return f"{self.reason}: {self.rule}"


class CapStateLost(RuntimeError):
    """The counters kept disappearing while being rebuilt; defer and try later."""


def _ms(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(milliseconds=1)


def _fingerprint(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:8]


@dataclass(frozen=True)
class _Slot:
    rule: CapRule
    key: str
    cutoff_ms: int | None
    ttl: timedelta
    period_end: datetime | None


class CapCounter:
    """Reserves and releases cap slots for members; see the module docstring.

    Args:
        client: a Redis client (one per thread or process).
        namespace: the key prefix shared by every worker of this deployment.
        rules: the program's cap rules (names unique).
        ledger: reads members' counted deliveries, to rebuild lost counters.
        default_time_zone: the zone of members without (or with an unknown) one.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        rules: Sequence[CapRule],
        *,
        ledger: Ledger,
        default_time_zone: str = DEFAULT_TIME_ZONE,
    ) -> None:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError("cap rule names must be unique")
        self.client = client
        self.namespace = namespace
        self.rules = tuple(rules)
        self.default_time_zone = default_time_zone
        self._ledger = ledger
        self._rule_fp = {
            rule.name: _fingerprint(rule.scope, rule.window_label, *sorted(rule.categories))
            for rule in self.rules
        }
        self._set_fp = _fingerprint(*(f"{n}={fp}" for n, fp in sorted(self._rule_fp.items())))
        lookback = [
            rule.window if isinstance(rule.window, timedelta) else _CALENDAR_LOOKBACK[rule.window]
            for rule in self.rules
        ]
        self.lookback = max(lookback, default=timedelta(0))
        self._marker_ttl = self.lookback + _MARKER_SLACK
        self._reserve = client.register_script(_RESERVE)

    # -- reserving -----------------------------------------------------------

    def reserve(
        self,
        member_id: int,
        channel: str,
        category: str,
        *,
        now: datetime,
        time_zone: str | None,
        delivery_id: int,
    ) -> Reservation | Capped:
        """Take a slot in every rule that applies, or none when one is full."""
        request = CapRequest(
            member_id=member_id,
            channel=channel,
            category=category,
            delivery_id=delivery_id,
            time_zone=time_zone,
        )
        return self.reserve_many([request], now=now)[0]

    def reserve_many(
        self, requests: Sequence[CapRequest], *, now: datetime
    ) -> list[Reservation | Capped]:
        """:meth:`reserve` for a batch: one pipelined round trip (two after a rebuild).

        Requests for the same member are decided in the order given.

        Raises:
            CapStateLost: the counters vanished again during each of three rebuilds.
            redis.RedisError: Redis is unreachable.
        """
        now = now.astimezone(UTC)
        slots = [self._slots(request, self._zone(request), now) for request in requests]
        results: list[Reservation | Capped | None] = [
            None if slots[i] else _reservation(request, []) for i, request in enumerate(requests)
        ]
        todo = [i for i, request_slots in enumerate(slots) if request_slots]
        for _ in range(_ATTEMPTS):
            if not todo:
                break
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                self._call_reserve(pipe, requests[i], slots[i], now)
            missing = []
            for i, reply in zip(todo, pipe.execute(), strict=True):
                if int(reply[0]) == -1:
                    missing.append(i)
                else:
                    results[i] = self._decide(requests[i], slots[i], reply)
            if missing:
                zones = {requests[i].member_id: requests[i].time_zone for i in missing}
                self.rebuild_members(list(zones), now=now, time_zones=zones)
            todo = missing
        if todo:
            lost = sorted({requests[i].member_id for i in todo})
            raise CapStateLost(f"cap counters of members {lost} could not be rebuilt")
        return [result for result in results if result is not None]

    def _call_reserve(
        self, pipe: redis.client.Pipeline, request: CapRequest, slots: list[_Slot], now: datetime
    ) -> None:
        args: list[str | int] = [_ms(now), _ttl_ms(self._marker_ttl), str(request.delivery_id)]
        for slot in slots:
            cutoff = "" if slot.cutoff_ms is None else str(slot.cutoff_ms)
            args += [slot.rule.limit, cutoff, _ttl_ms(slot.ttl)]
        keys = [self._marker(request.member_id), *(slot.key for slot in slots)]
        self._reserve(keys=keys, args=args, client=pipe)

    def _decide(
        self, request: CapRequest, slots: list[_Slot], reply: list[Any]
    ) -> Reservation | Capped:
        if int(reply[0]) == 1:
            return _reservation(request, slots)
        capped: list[Capped] = []
        for j in range(1, len(reply), 3):
            slot = slots[int(reply[j]) - 1]
            if slot.period_end is not None:
                free = slot.period_end
            else:
                assert isinstance(slot.rule.window, timedelta)  # rolling: a cutoff was sent
                free = _EPOCH + timedelta(milliseconds=float(reply[j + 2])) + slot.rule.window
            capped.append(
                Capped(
                    member_id=request.member_id,
                    delivery_id=request.delivery_id,
                    rule=slot.rule,
                    count=int(reply[j + 1]),
                    next_free_at=free,
                )
            )
        return max(capped, key=lambda c: c.next_free_at)

    # -- releasing -----------------------------------------------------------

    def release(
        self,
        member_id: int,
        channel: str,
        category: str,
        *,
        delivery_id: int,
        now: datetime,
        time_zone: str | None,
    ) -> None:
        """Give back the slots ``delivery_id`` holds (a permanent failure, a lost claim)."""
        request = CapRequest(
            member_id=member_id,
            channel=channel,
            category=category,
            delivery_id=delivery_id,
            time_zone=time_zone,
        )
        self.release_many([request], now=now)

    def release_many(self, requests: Sequence[CapRequest], *, now: datetime) -> None:
        """:meth:`release` for a batch, pipelined.

        A calendar slot is looked for in the period of ``now`` and the one
        before, so a release just after midnight finds yesterday's reservation.
        """
        now = now.astimezone(UTC)
        pipe = self.client.pipeline(transaction=False)
        for request in requests:
            zone = self._zone(request)
            keys = {slot.key for slot in self._slots(request, zone, now)}
            keys |= {slot.key for slot in self._slots(request, zone, now, previous=True)}
            for key in sorted(keys):
                pipe.zrem(key, str(request.delivery_id))
        pipe.execute()

    # -- rebuilding from the ledger -----------------------------------------

    def rebuild_members(
        self,
        member_ids: Sequence[int],
        *,
        now: datetime,
        time_zones: Mapping[int, str | None],
    ) -> None:
        """Add the members' counted ledger deliveries to their counters and mark them complete.

        A union (``ZADD NX``): a reservation already in Redis is kept, and
        running this twice, or from two workers at once, counts nothing twice.
        """
        if not member_ids or not self.rules:
            return
        now = now.astimezone(UTC)
        by_member: dict[int, list[LedgerEntry]] = defaultdict(list)
        for entry in self._ledger(list(member_ids), now - self.lookback):
            by_member[entry.member_id].append(entry)
        pipe = self.client.pipeline(transaction=True)
        for member_id in member_ids:
            zone = resolve_zone(time_zones.get(member_id), self.default_time_zone)
            ttls: dict[str, timedelta] = {}
            for entry in by_member.get(member_id, []):
                at = entry.at.astimezone(UTC)
                then = {slot.rule.name: slot.key for slot in self._slots(entry, zone, at)}
                for slot in self._slots(entry, zone, now):
                    # Rolling: still inside the window. Calendar: in the current period.
                    if (slot.cutoff_ms is None and then[slot.rule.name] != slot.key) or (
                        slot.cutoff_ms is not None and _ms(at) <= slot.cutoff_ms
                    ):
                        continue
                    pipe.zadd(slot.key, {str(entry.delivery_id): _ms(at)}, nx=True)
                    ttls[slot.key] = slot.ttl
            for key, ttl in ttls.items():
                pipe.pexpire(key, _ttl_ms(ttl))
            pipe.set(self._marker(member_id), "1", px=_ttl_ms(self._marker_ttl))
        pipe.execute()

    # -- keys ----------------------------------------------------------------

    def _key(self, member_id: int, rule: CapRule) -> str:
        return f"{self.namespace}:cap:{{{member_id}}}:{rule.name}:{self._rule_fp[rule.name]}"

    def _marker(self, member_id: int) -> str:
        return f"{self.namespace}:cap:{{{member_id}}}:ready:{self._set_fp}"

    def _zone(self, request: CapRequest) -> ZoneInfo:
        return resolve_zone(request.time_zone, self.default_time_zone)

    def _slots(
        self,
        message: CapRequest | LedgerEntry,
        zone: ZoneInfo,
        now: datetime,
        *,
        previous: bool = False,
    ) -> list[_Slot]:
        """The counters ``message`` touches at ``now`` (or in the period before ``now``'s)."""
        rules = [rule for rule in self.rules if rule.applies(message.channel, message.category)]
        if not rules:
            return []
        today = now.astimezone(zone).date()
        slots = []
        for rule in rules:
            base = self._key(message.member_id, rule)
            window = rule.window
            if isinstance(window, timedelta):
                slots.append(_Slot(rule, base, _ms(now - window), window + _SLACK, None))
                continue
            label, start, end = _period(window, today)
            if previous:
                label, start, end = _period(window, start - timedelta(days=1))
            period_end = local_midnight(end, zone)
            ttl = max(period_end - now, timedelta(0)) + _SLACK
            slots.append(_Slot(rule, f"{base}:{label}", None, ttl, period_end))
        return slots


def _period(window: str, day: date) -> tuple[str, date, date]:
    """The calendar period containing ``day``: its label, first day, and the day after it."""
    if window == "calendar_day":
        return day.isoformat(), day, day + timedelta(days=1)
    year, week, weekday = day.isocalendar()
    monday = day - timedelta(days=weekday - 1)
    return f"{year}-W{week:02d}", monday, monday + timedelta(days=7)


def _reservation(request: CapRequest, slots: list[_Slot]) -> Reservation:
    rules = tuple(slot.rule.name for slot in slots)
    return Reservation(member_id=request.member_id, delivery_id=request.delivery_id, rules=rules)


def _ttl_ms(ttl: timedelta) -> int:
    return max(1, ttl // timedelta(milliseconds=1))
