"""Provider rate limits: one token bucket in Redis shared by every worker."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from channels import TransientDeliveryError
from channels.ratelimit import TokenBucket

from .support import run_in_threads

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_a_bucket_grants_its_burst_then_paces_at_its_rate(client, redis_namespace):
    """Five tokens at once, then one every 1/rate seconds."""
    bucket = TokenBucket(client, f"{redis_namespace}:rate:t", rate=5, burst=5)
    assert [bucket.try_take() for _ in range(5)] == [0.0] * 5
    wait = bucket.try_take()
    assert 0.15 < wait <= 0.2


def test_concurrent_takers_share_one_rate(client, redis_namespace):
    """Eight threads with their own clients together take no more than the rate allows."""
    # Given a bucket of 20/s with a burst of 1, used from eight connections at once
    key = f"{redis_namespace}:rate:shared"
    taken: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 1.0

    def worker() -> None:
        own = redis.Redis(connection_pool=client.connection_pool)
        bucket = TokenBucket(own, key, rate=20, burst=1)
        while time.monotonic() < deadline:
            if bucket.try_take() == 0:
                with lock:
                    taken.append(time.monotonic())
            else:
                time.sleep(0.005)

    # When they race for one second
    run_in_threads(worker, 8)
    # Then about 20 tokens were granted in all, never a burst beyond the rate
    assert 15 <= len(taken) <= 22


def test_block_pauses_every_worker_until_retry_after(client, redis_namespace):
    """A provider's Retry-After seen by one worker stops the others too."""
    key = f"{redis_namespace}:rate:blocked"
    one = TokenBucket(client, key, rate=100)
    other = TokenBucket(client, key, rate=100, max_wait=0.1)
    one.block(3)
    with pytest.raises(TransientDeliveryError) as info:
        other.wait()
    assert info.value.retry_after is not None
    assert 2.5 < info.value.retry_after <= 3.0


def test_a_short_wait_is_slept_not_deferred(client, redis_namespace):
    """Waits under max_wait are slept through; the call then returns."""
    bucket = TokenBucket(client, f"{redis_namespace}:rate:short", rate=10, burst=1, max_wait=1)
    bucket.wait()
    started = time.monotonic()
    bucket.wait()
    assert 0.05 < time.monotonic() - started < 0.5


def test_acquire_grants_what_the_bucket_holds_up_to_the_count(client, redis_namespace):
    """A batch asking for 20 gets the 5 there are; then one at a time, paced at the rate."""
    bucket = TokenBucket(client, f"{redis_namespace}:rate:batch", rate=20, burst=5)
    assert bucket.try_take_up_to(3) == (3, 0.0)
    assert bucket.try_take_up_to(20)[0] == 2
    granted, wait = bucket.try_take_up_to(20)
    assert granted == 0
    assert 0 < wait <= 0.05
    started = time.monotonic()
    assert bucket.acquire(20) == 1
    assert 0.02 < time.monotonic() - started < 0.3


def test_acquire_in_batches_never_outruns_the_rate(client, redis_namespace):
    """Four threads taking batches of 8 for a second get about burst + rate tokens in all."""
    key = f"{redis_namespace}:rate:batches"
    taken: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 1.0

    def worker() -> None:
        own = redis.Redis(connection_pool=client.connection_pool)
        bucket = TokenBucket(own, key, rate=40, burst=10)
        while time.monotonic() < deadline:
            granted = bucket.acquire(8)
            with lock:
                taken.append(granted)

    run_in_threads(worker, 4)
    # 10 at once, then 40/s for about a second (plus the last grants after the deadline)
    assert 40 <= sum(taken) <= 10 + 40 * 1.2 + 4
    assert all(1 <= g <= 8 for g in taken)


def test_acquire_defers_when_blocked_beyond_max_wait(client, redis_namespace):
    """A blocked bucket grants nothing; past max_wait the batch is told when to come back."""
    bucket = TokenBucket(client, f"{redis_namespace}:rate:batch-blocked", rate=100, max_wait=0.1)
    bucket.block(3)
    assert bucket.try_take_up_to(5)[0] == 0
    with pytest.raises(TransientDeliveryError) as info:
        bucket.acquire(5)
    assert info.value.retry_after is not None
    assert 2.5 < info.value.retry_after <= 3.0
