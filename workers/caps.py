"""Frequency caps held atomically across all workers in Redis, with the ledger as the record.

:class:`CapCounter` keeps one sorted set of delivery ids per (member, rule),
scored by the reservation's instant: a rolling window (``7d``) is one set
trimmed to the window on each use; a calendar day or ISO week has one set per
period of the member's own zone (``...:2026-12-01``, ``...:2026-W49``),
computed here, which expires after the period.

Reserving is one Lua script per batch of messages (up to 250), which decides
them in order: for each message it checks every rule that applies and, only
if all pass, adds the delivery id to each, so no two workers can both take a
member's last slot. (A script per message cost a command to pack, send and
parse per message: a tenth of the deliver job's CPU per email with caps on.)
A delivery id already counted passes again (a retry does not take a second
slot). ``transactional`` is never counted and
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

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import redis

from .cap_keys import EPOCH, PER_CALL, RESERVE, KeyLayout, Shape, Slot, ms, ttl_ms
from .cap_ledger import COUNTED_STATUSES, Ledger, LedgerEntry, ledger_from, recent_deliveries
from .program import DEFAULT_TIME_ZONE, CapRule
from .quiet_hours import resolve_zone

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
#: A member's marker outlives the longest window by this much.
_MARKER_SLACK = timedelta(days=1)
_ATTEMPTS = 3


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
        self._layout = KeyLayout(namespace, self.rules)
        lookback = [
            rule.window if isinstance(rule.window, timedelta) else _CALENDAR_LOOKBACK[rule.window]
            for rule in self.rules
        ]
        self.lookback = max(lookback, default=timedelta(0))
        self._marker_ttl = self.lookback + _MARKER_SLACK
        self._reserve = client.register_script(RESERVE)

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
        shapes: dict[tuple[str, str, str | None], tuple[Shape, ...]] = {}
        slots: list[list[Slot]] = []
        for request in requests:
            # Rules and periods depend on the channel, category and zone, not the member.
            shape_key = (request.channel, request.category, request.time_zone)
            known = shapes.get(shape_key)
            if known is None:
                zone = self._zone(request)
                known = self._layout.shapes(request.channel, request.category, zone, now)
                shapes[shape_key] = known
            slots.append(self._layout.slots(request.member_id, known))
        results: list[Reservation | Capped | None] = [
            None if slots[i] else _reservation(request, []) for i, request in enumerate(requests)
        ]
        todo = [i for i, request_slots in enumerate(slots) if request_slots]
        for _ in range(_ATTEMPTS):
            if not todo:
                break
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(todo), PER_CALL):
                batch = [
                    (requests[i].member_id, requests[i].delivery_id, slots[i])
                    for i in todo[start : start + PER_CALL]
                ]
                keys, args = self._layout.reserve_call(batch, ms(now), ttl_ms(self._marker_ttl))
                self._reserve(keys=keys, args=args, client=pipe)
            replies = [reply for batch in pipe.execute() for reply in batch]
            missing = []
            for i, reply in zip(todo, replies, strict=True):
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

    def _decide(
        self, request: CapRequest, slots: list[Slot], reply: list[Any]
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
                free = EPOCH + timedelta(milliseconds=float(reply[j + 2])) + slot.rule.window
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

    def counts(self, channel: str, category: str) -> bool:
        """Whether any rule counts a message of ``category`` on ``channel``."""
        return any(rule.applies(channel, category) for rule in self.rules)

    def prepare(self, time_zones: Mapping[int, str | None], *, now: datetime) -> int:
        """Rebuild, in one go, the counters of those of these members that lack their marker.

        For a deliver job that reserves in several chunks (SMS: 20 messages a
        request): its members' missing counters are rebuilt with one ledger
        query, not one per chunk. One ``EXISTS`` of every marker when all are
        there (the usual case). Returns how many members were rebuilt.

        Raises:
            redis.RedisError: Redis is unreachable.
        """
        if not self.rules or not time_zones:
            return 0
        members = list(time_zones)
        markers = [self._marker(member_id) for member_id in members]
        if self.client.exists(*markers) == len(markers):
            return 0
        pipe = self.client.pipeline(transaction=False)
        for marker in markers:
            pipe.exists(marker)
        missing = [m for m, found in zip(members, pipe.execute(), strict=True) if not found]
        self.rebuild_members(missing, now=now, time_zones=time_zones)
        return len(missing)

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
                        slot.cutoff_ms is not None and ms(at) <= slot.cutoff_ms
                    ):
                        continue
                    pipe.zadd(slot.key, {str(entry.delivery_id): ms(at)}, nx=True)
                    ttls[slot.key] = slot.ttl
            for key, ttl in ttls.items():
                pipe.pexpire(key, ttl_ms(ttl))
            pipe.set(self._marker(member_id), "1", px=ttl_ms(self._marker_ttl))
        pipe.execute()

    # -- keys ----------------------------------------------------------------

    def _marker(self, member_id: int) -> str:
        return self._layout.marker(member_id)

    def _zone(self, request: CapRequest) -> ZoneInfo:
        return resolve_zone(request.time_zone, self.default_time_zone)

    def _slots(
        self,
        message: CapRequest | LedgerEntry,
        zone: ZoneInfo,
        now: datetime,
        *,
        previous: bool = False,
    ) -> list[Slot]:
        """The counters ``message`` touches at ``now`` (or in the period before ``now``'s)."""
        shapes = self._layout.shapes(
            message.channel, message.category, zone, now, previous=previous
        )
        return self._layout.slots(message.member_id, shapes)


def _reservation(request: CapRequest, slots: list[Slot]) -> Reservation:
    rules = tuple(slot.rule.name for slot in slots)
    return Reservation(member_id=request.member_id, delivery_id=request.delivery_id, rules=rules)
