"""The Redis side of frequency caps: the keys, a message's slots, the reserve script.

See :mod:`workers.caps` for how they are used.

Keys, under the deployment's namespace ``<ns>``:

- ``<ns>:cap:{<member>}:<rule>:<fp>``: a rolling rule's sorted set of delivery
  ids, scored by the reservation's instant in ms, trimmed to the window on use;
- the same followed by ``:<YYYY-MM-DD>`` or ``:<YYYY>-W<ww>``: a calendar
  rule's set for one day or ISO week of the member's own zone;
- ``<ns>:cap:{<member>}:ready:<set fp>``: the member's marker ("these counters
  are complete").

``<fp>`` fingerprints a rule's scope, window and categories, and the set
fingerprint the whole rule set, so changing the rules starts new counters.
A message's :class:`Slot` per rule is its key and the rule's terms at that
instant; a :class:`Shape` is the same without the member, the same for every
member of one zone, channel and category (a deliver job computes each once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .program import CapRule
from .quiet_hours import local_midnight

__all__ = ["PER_CALL", "RESERVE", "KeyLayout", "Shape", "Slot", "ms", "ttl_ms"]

#: Keys outlive what they must hold by this much.
SLACK = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Many messages in one call, decided in order. KEYS: per message, its member's marker,
# then one set per rule that applies. ARGV: now_ms, marker_ttl_ms, then per message:
# delivery_id, the number of rules n, then per rule: limit, cutoff_ms ('' for a calendar
# period), ttl_ms. Returns one reply per message: {-1} without the marker, {1} when
# reserved, else {0, rule index, count, score of the entry that must leave first ('' for
# calendar), ...}.
RESERVE = """
local now, marker_ttl = ARGV[1], ARGV[2]
local replies = {}
local k, a = 1, 3
while a <= #ARGV do
  local id, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  if redis.call('EXISTS', KEYS[k]) == 0 then
    table.insert(replies, {-1})
  else
    local reply = {0}
    for i = 1, n do
      local key, arg = KEYS[k + i], a + (i - 1) * 3
      local limit, cutoff = tonumber(ARGV[arg]), ARGV[arg + 1]
      if cutoff ~= '' then redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff) end
      if not redis.call('ZSCORE', key, id) then
        local count = redis.call('ZCARD', key)
        if count >= limit then
          local first = ''
          if cutoff ~= '' then
            first = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')[2]
          end
          table.insert(reply, i)
          table.insert(reply, count)
          table.insert(reply, first)
        end
      end
    end
    redis.call('PEXPIRE', KEYS[k], marker_ttl)
    if #reply == 1 then
      for i = 1, n do
        redis.call('ZADD', KEYS[k + i], now, id)
        redis.call('PEXPIRE', KEYS[k + i], ARGV[a + (i - 1) * 3 + 2])
      end
      reply = {1}
    end
    table.insert(replies, reply)
  end
  k = k + 1 + n
  a = a + 3 * n
end
return replies
"""
#: Messages per reserve call: Redis runs nothing else while a script runs.
PER_CALL = 250


class Slot(NamedTuple):
    """One counter a message touches: its rule, key, and the rule's terms at that instant."""

    rule: CapRule
    key: str
    cutoff_ms: int | None
    """Entries scored at or before this leave a rolling window; None for a calendar period."""
    ttl: timedelta
    period_end: datetime | None
    """When a calendar period ends (its slots free); None for a rolling window."""


class Shape(NamedTuple):
    """A :class:`Slot` without its member."""

    rule: CapRule
    suffix: str
    """After the member's key for the rule: ``''`` (rolling) or ``:<period label>``."""
    cutoff_ms: int | None
    ttl: timedelta
    period_end: datetime | None


class KeyLayout:
    """The keys and slots of ``rules`` under ``namespace``; see the module docstring."""

    def __init__(self, namespace: str, rules: Sequence[CapRule]) -> None:
        self.rules = tuple(rules)
        fingerprints = {
            rule.name: _fingerprint(rule.scope, rule.window_label, *sorted(rule.categories))
            for rule in self.rules
        }
        self._rule_prefix = {
            name: (f"{namespace}:cap:{{", f"}}:{name}:{fp}") for name, fp in fingerprints.items()
        }
        set_fp = _fingerprint(*(f"{n}={fp}" for n, fp in sorted(fingerprints.items())))
        self._marker_suffix = f"}}:ready:{set_fp}"
        self._prefix = f"{namespace}:cap:{{"

    def key(self, member_id: int, rule: CapRule) -> str:
        before, after = self._rule_prefix[rule.name]
        return f"{before}{member_id}{after}"

    def marker(self, member_id: int) -> str:
        return f"{self._prefix}{member_id}{self._marker_suffix}"

    def reserve_call(
        self, batch: Sequence[tuple[int, int, Sequence[Slot]]], now_ms: int, marker_ttl_ms: int
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of one :data:`RESERVE` call for ``batch``: (member, delivery, slots)."""
        keys: list[str] = []
        args: list[str | int] = [now_ms, marker_ttl_ms]
        for member_id, delivery_id, slots in batch:
            keys.append(self.marker(member_id))
            args += (delivery_id, len(slots))
            for slot in slots:
                keys.append(slot.key)
                cutoff = "" if slot.cutoff_ms is None else slot.cutoff_ms
                args += (slot.rule.limit, cutoff, ttl_ms(slot.ttl))
        return keys, args

    def slots(self, member_id: int, shapes: Sequence[Shape]) -> list[Slot]:
        """``shapes`` for ``member_id``."""
        return [
            Slot(s.rule, self.key(member_id, s.rule) + s.suffix, s.cutoff_ms, s.ttl, s.period_end)
            for s in shapes
        ]

    def shapes(
        self, channel: str, category: str, zone: ZoneInfo, now: datetime, *, previous: bool = False
    ) -> tuple[Shape, ...]:
        """The rules a message of ``channel`` and ``category`` counts against, and their terms
        at ``now`` (UTC) in ``zone``; ``previous``: in the calendar period before ``now``'s."""
        rules = [rule for rule in self.rules if rule.applies(channel, category)]
        if not rules:
            return ()
        today = now.astimezone(zone).date()
        shapes = []
        for rule in rules:
            window = rule.window
            if isinstance(window, timedelta):
                shapes.append(Shape(rule, "", ms(now - window), window + SLACK, None))
                continue
            label, start, end = _period(window, today)
            if previous:
                label, start, end = _period(window, start - timedelta(days=1))
            period_end = local_midnight(end, zone)
            ttl = max(period_end - now, timedelta(0)) + SLACK
            shapes.append(Shape(rule, f":{label}", None, ttl, period_end))
        return tuple(shapes)


def ms(instant: datetime) -> int:
    """An instant as Redis scores it: milliseconds since the epoch."""
    return (instant - EPOCH) // timedelta(milliseconds=1)


def ttl_ms(ttl: timedelta) -> int:
    """A TTL in milliseconds, at least 1 (Redis refuses 0)."""
    return max(1, ttl // timedelta(milliseconds=1))


def _fingerprint(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:8]


def _period(window: str, day: date) -> tuple[str, date, date]:
    """The calendar period containing ``day``: its label, first day, and the day after it."""
    if window == "calendar_day":
        return day.isoformat(), day, day + timedelta(days=1)
    year, week, weekday = day.isocalendar()
    monday = day - timedelta(days=weekday - 1)
    return f"{year}-W{week:02d}", monday, monday + timedelta(days=7)
