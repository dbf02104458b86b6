"""Provider rate limits shared by every worker: a token bucket in Redis.

Each provider and sender has a bucket (``<namespace>:rate:<provider>:<sender>``)
holding up to ``burst`` tokens, refilled at ``rate`` per second. Taking a
token is one Lua script, atomic across all workers on all machines, timed by
Redis's own clock. A channel that sends a batch takes its tokens with one
script call (:meth:`TokenBucket.acquire`): it gets as many as the bucket holds,
up to what it asked for, and sends only that many requests before asking
again, so a batch never outruns the rate. A provider's Retry-After or X-RateLimit-Reset is shared
the same way: :meth:`TokenBucket.block` empties the bucket until then, so one
worker's 429 pauses every worker sending to that provider.

A wait shorter than ``max_wait`` is slept; a longer one raises
``TransientDeliveryError(retry_after)``, and the delivery waits in the store
as ``deferred`` instead of holding a worker thread.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis

from .errors import TransientDeliveryError

__all__ = ["DEFAULT_MAX_WAIT", "NoLimit", "RateLimiter", "TokenBucket"]

#: The longest a worker thread sleeps for a token before deferring instead.
DEFAULT_MAX_WAIT = 2.0

# Both scripts start by reading the bucket (KEYS[1]) at Redis's clock; ARGV: rate,
# burst, tokens wanted.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'blocked')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
local blocked = tonumber(state[3]) or 0
"""

_TAKE = (
    _BUCKET
    + """
if blocked > now then
  return tostring(blocked - now)
end
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens >= want then
  tokens = tokens - want
else
  wait = (want - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""
)

# Take up to ARGV[3] whole tokens: as many as the bucket holds (at least one),
# or none and the seconds until one is there. Returns {granted, wait}.
_TAKE_UP_TO = (
    _BUCKET
    + """
if blocked > now then
  return {'0', tostring(blocked - now)}
end
tokens = math.min(burst, tokens + (now - at) * rate)
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {tostring(granted), tostring(wait)}
"""
)

_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
if until_ > blocked then
  redis.call('HSET', KEYS[1], 'blocked', tostring(until_), 'tokens', '0', 'at', tostring(until_))
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
end
return 1
"""


class RateLimiter(Protocol):
    """What a channel calls before each provider request."""

    def wait(self) -> None:
        """Return when a request may go; raise TransientDeliveryError if that is too far off."""
        ...

    def acquire(self, count: int) -> int:
        """Take between 1 and ``count`` tokens, waiting for the first as :meth:`wait` does.

        Returns how many were taken: the caller sends that many requests (no
        more), promptly, and asks again for the rest.

        Raises:
            TransientDeliveryError: Not even one token is coming soon enough.
        """
        ...

    def block(self, seconds: float) -> None:
        """No request may go for ``seconds`` (the provider said so)."""
        ...


class NoLimit:
    """No rate limit (outbox mode, tests without Redis)."""

    def wait(self) -> None:
        return None

    def acquire(self, count: int) -> int:
        return count

    def block(self, seconds: float) -> None:
        return None


class TokenBucket:
    """A token bucket in Redis, shared by every process that names the same key."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: float,
        *,
        burst: float | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.client = client
        self.key = key
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.max_wait = max_wait
        self._take = client.register_script(_TAKE)
        self._take_up_to = client.register_script(_TAKE_UP_TO)
        self._block = client.register_script(_BLOCK)

    def try_take(self, tokens: float = 1.0) -> float:
        """Take ``tokens`` if there are enough and return 0, else return the seconds to wait."""
        return float(self._take(keys=[self.key], args=[self.rate, self.burst, tokens]))

    def try_take_up_to(self, count: int) -> tuple[int, float]:
        """Take as many whole tokens as there are, up to ``count``: ``(taken, 0.0)``.

        With not even one there, nothing is taken: ``(0, seconds until one is)``.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        granted, wait = self._take_up_to(keys=[self.key], args=[self.rate, self.burst, count])
        return int(float(granted)), float(wait)

    def wait(self) -> None:
        while True:
            delay = self.try_take()
            if delay <= 0:
                return
            self._sleep_or_defer(delay)

    def acquire(self, count: int) -> int:
        while True:
            granted, delay = self.try_take_up_to(count)
            if granted:
                return granted
            self._sleep_or_defer(delay)

    def _sleep_or_defer(self, delay: float) -> None:
        if delay > self.max_wait:
            raise TransientDeliveryError(
                f"rate limit {self.key}: next slot in {delay:.1f} s", retry_after=delay
            )
        time.sleep(delay)

    def block(self, seconds: float) -> None:
        if seconds > 0:
            self._block(keys=[self.key], args=[seconds])
