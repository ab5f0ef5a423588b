"""Delivery tests' shared plumbing: a mock_moog the forwarder posts to, with the delivery state cleared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core import streams
from delivery.breaker import CircuitBreaker
from delivery.destinations.moogsoft import MOOGSOFT
from delivery.ratelimit import SharedRateLimit
from delivery.retry import schedule_key
from devtools.mock_moog import MockMoog
from tests.support.waiting import apply_setting


@pytest.fixture
def moog(clean_pipeline, redis_client) -> Iterator[MockMoog]:
    delivery_keys = [
        schedule_key(),
        CircuitBreaker(redis_client).key,
        SharedRateLimit(redis_client).key,
        MOOGSOFT.inflight_key(),
    ]
    redis_client.delete(*delivery_keys)
    for name in redis_client.scan_iter(match=f"{streams.alerts_stream().rsplit(':', 2)[0]}:delivered:*"):
        redis_client.delete(name)
    server = MockMoog().start()
    apply_setting("moog_url", f"{server.url}/events")
    apply_setting("moog_retry_base_delay", 0.01)
    apply_setting("moog_retry_max_delay", 1)
    yield server
    server.close()
    redis_client.delete(*delivery_keys)
