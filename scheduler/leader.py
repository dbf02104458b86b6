"""The scheduler leader lock: a Redis key with a token, renewed while held.

``SET key token NX PX ttl`` takes it; a Lua script renews it only while the
key still holds our token, and another releases it the same way, so a
process that lost the lock (paused past the TTL) can never extend or delete
the new leader's lock. Standbys retry until the key expires.
"""

from __future__ import annotations

import uuid

import redis

__all__ = ["LeaderLock"]

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LeaderLock:
    """A lock one scheduler holds at a time, for ``ttl_seconds`` unless renewed."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True when we hold it now."""
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lock; False means we no longer hold it."""
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        """Give the lock up if we still hold it."""
        self._release(keys=[self.key], args=[self.token])

    def held(self) -> bool:
        """True while the key holds our token."""
        value = self.client.get(self.key)
        return value in (self.token, self.token.encode())
