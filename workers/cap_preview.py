"""Frequency caps for a forecast: the real counters read, never written.

A forecast must count a capped message exactly as the deliver job would,
without taking a slot. :class:`CapPreview` reads each member's counters from
Redis the first time it needs them (``EXISTS`` and ``ZRANGE``: read only).
When a member's counters are not marked complete, it adds the member's
counted ledger deliveries the way :meth:`CapCounter.rebuild_members` would
before deciding (the real run rebuilds them first). Then it decides each
message as the reserve script does, and keeps its own reservations in
memory: a member who reaches a cap halfway through a forecast is capped from
there on, as in the real run.

Redis unreachable: the counters are read from the ledger alone, and
:attr:`CapPreview.problem` says so (the forecast reports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy.orm import Session

from .cap_keys import Slot, ms
from .cap_ledger import LedgerEntry, recent_deliveries
from .caps import CapCounter, Capped, CapRequest, Reservation, _reservation

__all__ = ["CapPreview"]


class CapPreview:
    """Decides cap outcomes like :meth:`CapCounter.reserve_many`, holding reservations in memory."""

    def __init__(self, counter: CapCounter) -> None:
        self.counter = counter
        self.problem: str | None = None
        self._complete: dict[int, bool] = {}
        self._ledger: dict[int, list[LedgerEntry]] = {}
        self._sets: dict[str, dict[str, int]] = {}
        """Per counter key, ``{delivery id: score in ms}`` as Redis would hold it."""

    def _slots(self, request: CapRequest, now: datetime) -> list[Slot]:
        return self.counter._slots(request, self.counter._zone(request), now.astimezone(UTC))

    def load(self, session: Session, requests: Sequence[tuple[CapRequest, datetime]]) -> None:
        """Read the counters ``requests`` (each with the instant it is decided) will touch.

        One pipelined read from Redis and one ledger query (in ``session``) for
        the members whose counters are not marked complete.
        """
        members = sorted({r.member_id for r, _ in requests} - set(self._complete))
        keys: dict[str, tuple[CapRequest, datetime, Slot]] = {}
        for request, now in requests:
            for slot in self._slots(request, now):
                if slot.key not in self._sets:
                    keys.setdefault(slot.key, (request, now, slot))
        if not members and not keys:
            return
        found: dict[str, dict[str, int]] = {key: {} for key in keys}
        complete = dict.fromkeys(members, False)
        if self.problem is None:
            try:
                pipe = self.counter.client.pipeline(transaction=False)
                for member_id in members:
                    pipe.exists(self.counter._marker(member_id))
                for key in keys:
                    pipe.zrange(key, 0, -1, withscores=True)
                replies: list[Any] = pipe.execute()
            except redis.RedisError as exc:
                self.problem = f"Redis unreachable ({exc}); cap counts read from the ledger"
            else:
                for member_id, exists in zip(members, replies, strict=False):
                    complete[member_id] = bool(exists)
                for key, pairs in zip(keys, replies[len(members) :], strict=True):
                    found[key] = {_text(member): int(score) for member, score in pairs}
        self._complete.update(complete)
        rebuild = [m for m in members if not complete[m]]
        if rebuild:
            since = min(now for _, now in requests) - self.counter.lookback
            for entry in recent_deliveries(session, rebuild, since):
                self._ledger.setdefault(entry.member_id, []).append(entry)
        for key, (request, now, slot) in keys.items():
            held = found[key]
            if not self._complete[request.member_id]:
                self._add_ledger(held, request, now, slot)
            self._sets[key] = held

    def _add_ledger(
        self, held: dict[str, int], request: CapRequest, now: datetime, slot: Slot
    ) -> None:
        """What a rebuild at ``now`` adds to ``slot``'s counter (a union, as ``ZADD NX``)."""
        zone = self.counter._zone(request)
        for entry in self._ledger.get(request.member_id, []):
            at = entry.at.astimezone(UTC)
            if not slot.rule.applies(entry.channel, entry.category):
                continue
            if slot.cutoff_ms is None:
                then = {s.rule.name: s.key for s in self.counter._slots(entry, zone, at)}
                if then.get(slot.rule.name) != slot.key:
                    continue
            elif ms(at) <= slot.cutoff_ms:
                continue
            held.setdefault(str(entry.delivery_id), ms(at))

    def reserve(self, request: CapRequest, now: datetime) -> Reservation | Capped:
        """Decide ``request`` at ``now`` as the reserve script would; hold its slot if it passes.

        :meth:`load` must have read its counters.
        """
        slots = self._slots(request, now)
        if not slots:
            return _reservation(request, [])
        reply: list[Any] = [0]
        for index, slot in enumerate(slots, start=1):
            held = self._sets[slot.key]
            if slot.cutoff_ms is not None:
                cutoff = slot.cutoff_ms
                for member in [m for m, score in held.items() if score <= cutoff]:
                    del held[member]
            if str(request.delivery_id) in held:
                continue
            count = len(held)
            if count >= slot.rule.limit:
                first: str | float = ""
                if slot.cutoff_ms is not None:
                    first = sorted(held.values())[count - slot.rule.limit]
                reply += [index, count, first]
        if len(reply) > 1:
            return self.counter._decide(request, slots, reply)
        for slot in slots:
            self._sets[slot.key][str(request.delivery_id)] = ms(now.astimezone(UTC))
        return _reservation(request, slots)

    def release(self, request: CapRequest, now: datetime) -> None:
        """Give back the slot ``request`` holds (a message the provider would refuse for good)."""
        for slot in self._slots(request, now):
            self._sets.get(slot.key, {}).pop(str(request.delivery_id), None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
