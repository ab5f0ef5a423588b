"""Several requests in flight (forwarder_concurrency), with the shared rules intact, against real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core import contracts, streams
from delivery.breaker import CLOSED, OPEN, CircuitBreaker
from delivery.lanes import Lanes
from tests.delivery.support import recorded
from tests.support.events import make_alert, push_alerts
from tests.support.waiting import apply_setting, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def run_until_idle(lanes: Lanes, timeout: float = 30.0) -> bool:
    return wait_for(lambda: (lanes.step(block_ms=10), lanes.idle())[1], timeout=timeout, interval=0)


def consumers(redis_client) -> set[str]:
    rows = redis_client.xinfo_consumers(streams.alerts_stream(), contracts.FORWARDERS_GROUP)
    return {row["name"].decode() for row in rows}


def test_lanes_keep_several_requests_in_flight_and_deliver_each_alert_once(moog, redis_client):
    apply_setting("forwarder_concurrency", 3)
    apply_setting("moog_batch_size", 1)
    moog.configure(latency_ms=100)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(30)]
    push_alerts(redis_client, alerts)
    lanes = Lanes("lanes")
    started = time.monotonic()
    try:
        assert run_until_idle(lanes)
    finally:
        lanes.close()
    elapsed = time.monotonic() - started
    delivered = Counter(event["custom_info"]["event_id"] for event in recorded(moog))
    assert set(delivered) == {alert["event_id"] for alert in alerts}
    assert max(delivered.values()) == 1
    assert elapsed < 30 * 0.1 * 0.8, f"one request at a time would take 3 s, this took {elapsed:.1f} s"
    assert consumers(redis_client) == set(), "every lane left the group on close"


def test_an_outage_with_several_lanes_still_sends_one_probe_per_breaker_timeout(moog, redis_client):
    apply_setting("forwarder_concurrency", 4)
    apply_setting("circuit_breaker_threshold", 3)
    apply_setting("circuit_breaker_timeout", 1)
    apply_setting("moog_batch_size", 1)
    moog.configure(status=503)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(40)]
    push_alerts(redis_client, alerts)
    lanes = Lanes("lanes")
    breaker = CircuitBreaker(redis_client)
    try:
        assert wait_for(lambda: (lanes.step(block_ms=10), breaker.snapshot().state == OPEN)[1], 10)
        time.sleep(0.3)  # requests already in flight when it opened come back
        attempts_when_opened = moog.state.requests
        deadline = time.monotonic() + 3  # three breaker timeouts of outage
        while time.monotonic() < deadline:
            lanes.step(block_ms=10)
            time.sleep(0.01)
        assert moog.state.requests <= attempts_when_opened + 3, "one probe per timeout among all lanes"
        assert redis_client.xlen(streams.dlq_stream("moog")) == 0, "no retries burned while open"
        moog.configure(reset=True)
        assert run_until_idle(lanes)
    finally:
        lanes.close()
    assert breaker.snapshot().state == CLOSED
    delivered = Counter(event["custom_info"]["event_id"] for event in recorded(moog))
    assert set(delivered) == {alert["event_id"] for alert in alerts}
    assert max(delivered.values()) == 1


def test_lowering_the_concurrency_stops_lanes_and_gives_their_alerts_back(moog, redis_client):
    apply_setting("forwarder_concurrency", 3)
    apply_setting("moog_batch_size", 1)
    apply_setting("moog_rate_limit", 1)
    apply_setting("moog_rate_period", 3600)
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(10)])
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    lanes = Lanes("lanes")
    try:
        lanes.adjust()  # two lanes in threads; the first one is not stepped here
        assert wait_for(lambda: len(consumers(redis_client)) == 2, 10)
        assert wait_for(lambda: redis_client.xpending(stream, group)["pending"] > 0, 10), "alerts in hand"
        apply_setting("forwarder_concurrency", 1)
        lanes.adjust()
        assert wait_for(lambda: consumers(redis_client) == set(), 10), "the stopped lanes left the group"
        assert redis_client.xpending(stream, group)["pending"] == 0
        assert redis_client.xlen(stream) + len(recorded(moog)) == 10, "nothing in hand was lost"
    finally:
        lanes.close()


@pytest.mark.timeout(120)
def test_sigterm_gives_the_alerts_in_hand_back_and_exits_cleanly(moog, redis_client, child_env):
    apply_setting("moog_batch_size", 1)
    apply_setting("moog_rate_limit", 1)
    apply_setting("moog_rate_period", 3600)
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(10)])
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_forwarder", "--consumer", "stopping"],
        cwd=BASE_DIR, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(recorded(moog)) == 1, timeout=60), "the one token was used"
        assert wait_for(lambda: redis_client.xpending(stream, group)["pending"] > 0, timeout=10)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.stderr.read()
    finally:
        if worker.poll() is None:
            worker.kill()
    assert redis_client.xpending(stream, group)["pending"] == 0
    assert redis_client.xlen(stream) == 9
    assert consumers(redis_client) == set()
