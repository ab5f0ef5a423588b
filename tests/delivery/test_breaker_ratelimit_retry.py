"""The shared delivery controls against real Redis: breaker, rate limit, retry schedule."""

from __future__ import annotations

import random
import threading
import time

import pytest

from core import contracts, streams
from delivery.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from delivery.ratelimit import SharedRateLimit
from delivery.retry import RetrySchedule, backoff_delay


@pytest.fixture
def breaker(redis_client):
    cb = CircuitBreaker(redis_client, destination="test-moog")
    cb.reset()
    yield cb
    cb.reset()


def test_breaker_opens_after_threshold_consecutive_failures(breaker):
    assert breaker.acquire(timeout=30) == "go"
    for _ in range(2):
        assert breaker.record(False, threshold=3)[1] == CLOSED
    assert breaker.record(False, threshold=3) == (CLOSED, OPEN)
    assert breaker.acquire(timeout=30) == "wait"


def test_a_success_resets_the_failure_count(breaker):
    breaker.record(False, threshold=3)
    breaker.record(False, threshold=3)
    breaker.record(True, threshold=3)
    breaker.record(False, threshold=3)
    assert breaker.snapshot().state == CLOSED
    assert breaker.snapshot().failures == 1


def test_half_open_admits_exactly_one_probe_among_concurrent_callers(breaker):
    breaker.record(False, threshold=1)
    time.sleep(1.05)
    decisions: list[str] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        decisions.append(breaker.acquire(timeout=1))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(decisions) == ["probe"] + ["wait"] * 7
    assert breaker.snapshot().state == HALF_OPEN


def test_probe_success_closes_and_probe_failure_reopens(breaker):
    breaker.record(False, threshold=1)
    time.sleep(1.05)
    assert breaker.acquire(timeout=1) == "probe"
    assert breaker.record(False, threshold=1) == (HALF_OPEN, OPEN)
    assert breaker.acquire(timeout=1) == "wait"
    time.sleep(1.05)
    assert breaker.acquire(timeout=1) == "probe"
    assert breaker.record(True, threshold=1) == (HALF_OPEN, CLOSED)
    assert breaker.acquire(timeout=1) == "go"


def test_a_lost_probe_is_replaced_after_the_timeout(breaker):
    breaker.record(False, threshold=1)
    time.sleep(1.05)
    assert breaker.acquire(timeout=1) == "probe"
    assert breaker.acquire(timeout=1) == "wait"
    time.sleep(1.05)  # the probing forwarder died without reporting
    assert breaker.acquire(timeout=1) == "probe"


def test_rate_limit_grants_up_to_the_limit_then_says_how_long_to_wait(redis_client):
    limit = SharedRateLimit(redis_client, destination=f"test-{time.time_ns()}")
    granted = [limit.take(5, 1.0) for _ in range(5)]
    assert granted == [0.0] * 5
    wait = limit.take(5, 1.0)
    assert 0 < wait <= 0.2 + 1e-6
    time.sleep(wait + 0.01)
    assert limit.take(5, 1.0) == 0.0


def test_rate_limit_is_shared_across_clients(redis_client):
    name = f"test-{time.time_ns()}"
    first, second = SharedRateLimit(redis_client, name), SharedRateLimit(redis_client, name)
    assert [first.take(2, 10.0), second.take(2, 10.0)] == [0.0, 0.0]
    assert second.take(2, 10.0) > 0


def test_backoff_has_full_jitter_and_a_cap():
    rng = random.Random(7)
    delays = [backoff_delay(attempt, 1.0, 30.0, rng) for attempt in range(1, 12)]
    assert all(0 <= d <= min(30.0, 2 ** (a - 1)) for a, d in zip(range(1, 12), delays, strict=True))
    assert max(backoff_delay(20, 1.0, 30.0, rng) for _ in range(200)) <= 30.0


def test_scheduling_a_retry_acknowledges_the_entry_atomically_and_due_retries_return(redis_client):
    stream = streams.alerts_stream()
    redis_client.delete(stream)
    streams.ensure_group(redis_client, stream, contracts.FORWARDERS_GROUP)
    schedule = RetrySchedule(redis_client, stream, contracts.FORWARDERS_GROUP, destination=f"t{time.time_ns()}")
    entry_id = redis_client.xadd(stream, {"e": b'{"event_id": "a"}'})
    redis_client.xreadgroup(contracts.FORWARDERS_GROUP, "f1", {stream: ">"}, count=10)
    now = time.time()
    schedule.schedule_and_ack([(now + 60, b'{"event_id": "a", "attempts": 1}', entry_id)])
    assert redis_client.xpending(stream, contracts.FORWARDERS_GROUP)["pending"] == 0
    assert schedule.depth() == 1
    assert schedule.release_due(now) == 0, "not due yet"
    assert schedule.release_due(now + 61) == 1
    assert schedule.depth() == 0
    assert streams.decode(redis_client.xrange(stream)[-1][1]) == {"event_id": "a", "attempts": 1}
    redis_client.delete(stream, schedule.key)
