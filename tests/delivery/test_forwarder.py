"""The forwarder over real HTTP against mock_moog, with real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from configcenter.secrets import reset_secrets
from delivery.breaker import CLOSED, OPEN, CircuitBreaker
from delivery.forwarder import Forwarder, delivered_key
from delivery.mock_moog import MockMoog
from delivery.retry import schedule_key
from mutt_project import streams
from tests.support.events import make_alert, push_alerts
from tests.support.waiting import apply_setting, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def moog(clean_pipeline, redis_client):
    redis_client.delete(schedule_key(), CircuitBreaker(redis_client).key)
    for name in redis_client.scan_iter(match=f"{streams.alerts_stream().rsplit(':', 2)[0]}:delivered:*"):
        redis_client.delete(name)
    server = MockMoog().start()
    apply_setting("moog_url", f"{server.url}/events")
    apply_setting("moog_retry_base_delay", 0.01)
    apply_setting("moog_retry_max_delay", 1)
    yield server
    server.close()
    redis_client.delete(schedule_key(), CircuitBreaker(redis_client).key)


def deliver_all(forwarder: Forwarder, timeout: float = 15.0) -> None:
    def done() -> bool:
        forwarder.step(block_ms=10)
        return forwarder.idle()

    assert wait_for(done, timeout=timeout, interval=0.005), "alerts left undelivered"


def recorded(moog: MockMoog) -> list[dict]:
    return [record["event"] for record in moog.events()]


def test_webhook_format_maps_every_field(moog, redis_client):
    alert = make_alert(severity="critical", trap_oid="1.3.6.1.4.1.9.9.41", event_time="2026-11-26T10:00:00+00:00")
    push_alerts(redis_client, [alert])
    forwarder = Forwarder("f1")
    deliver_all(forwarder)
    (event,) = recorded(moog)
    assert event["signature"] == alert["signature"]
    assert (event["source_id"], event["source"], event["external_id"]) == (
        "core-rtr-01", "core-rtr-01", alert["correlation_id"],
    )  # fmt: skip
    assert (event["severity"], event["manager"], event["agent_time"]) == (5, "MUTT", 1795687200)
    assert event["description"] == alert["description"]
    assert event["custom_info"]["event_id"] == alert["event_id"]
    assert event["custom_info"]["team"] == "network-ops"
    assert redis_client.exists(delivered_key(alert["event_id"]))
    assert redis_client.xpending(streams.alerts_stream(), streams.FORWARDERS_GROUP)["pending"] == 0


def test_events_api_format_with_api_key_header(moog, redis_client, settings, tmp_path):
    key_file = tmp_path / "moog.key"
    key_file.write_text("cloud-key-123")
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_FILE": str(key_file)}
    reset_secrets()
    apply_setting("moog_format", "events_api")
    alerts = [make_alert(severity=s, signature=f"h:{i}:") for i, s in enumerate(["indeterminate", "minor", "clear"])]
    push_alerts(redis_client, alerts)
    deliver_all(Forwarder("f1"))
    events = moog.events()
    assert {e["format"] for e in events} == {"events_api"}
    assert {e["auth"] for e in events} == {"apiKey"}
    assert [e["event"]["severity"] for e in events] == ["unknown", "minor", "clear"]
    assert [e["event"]["dedupe_key"] for e in events] == ["h:0:", "h:1:", "h:2:"]
    assert events[0]["request"] == events[2]["request"], "batched in one request"
    reset_secrets()


def test_a_500_is_retried_later_and_delivered_once(moog, redis_client):
    moog.configure(status=500, times=1)
    alert = make_alert()
    push_alerts(redis_client, [alert])
    forwarder = Forwarder("f1")
    forwarder.step(block_ms=10)
    assert recorded(moog) == []
    assert redis_client.zcard(schedule_key()) == 1, "scheduled, not slept on"
    assert redis_client.xpending(streams.alerts_stream(), streams.FORWARDERS_GROUP)["pending"] == 0
    deliver_all(forwarder)
    assert [e["custom_info"]["event_id"] for e in recorded(moog)] == [alert["event_id"]]


def test_a_429_waits_for_retry_after(moog, redis_client):
    moog.configure(status=429, retry_after=1, times=1)
    push_alerts(redis_client, [make_alert()])
    forwarder = Forwarder("f1")
    forwarder.step(block_ms=10)
    ((_, due),) = redis_client.zrange(schedule_key(), 0, -1, withscores=True)
    assert 0.8 <= due - time.time() <= 1.1
    forwarder.step(block_ms=10)
    assert recorded(moog) == [], "not before Retry-After"
    deliver_all(forwarder)
    assert len(recorded(moog)) == 1


def test_a_400_goes_to_the_dlq_with_status_response_and_reason(moog, redis_client):
    moog.configure(status=400, times=1)
    alert = make_alert()
    push_alerts(redis_client, [alert])
    Forwarder("f1").step(block_ms=10)
    ((_, fields),) = redis_client.xrange(streams.dlq_stream("moog"))
    assert (fields[b"reason"], fields[b"status"]) == (b"http_400", b"400")
    assert b"failure injected" in fields[b"response"]
    assert fields[b"event_id"].decode() == alert["event_id"]
    assert streams.decode(fields)["signature"] == alert["signature"]
    assert redis_client.zcard(schedule_key()) == 0
    assert redis_client.xpending(streams.alerts_stream(), streams.FORWARDERS_GROUP)["pending"] == 0


def test_a_timeout_is_retryable(moog, redis_client):
    apply_setting("moog_timeout", 0.3)
    moog.configure(timeout=True, times=1)
    push_alerts(redis_client, [make_alert()])
    forwarder = Forwarder("f1")
    forwarder.step(block_ms=10)
    (member,) = redis_client.zrange(schedule_key(), 0, -1)
    assert b'"last_error":"timeout"' in member
    deliver_all(forwarder)
    assert len(recorded(moog)) == 1


def test_retries_end_in_the_dlq_when_exhausted(moog, redis_client):
    apply_setting("moog_max_retries", 2)
    apply_setting("circuit_breaker_threshold", 100)
    moog.configure(status=503)
    push_alerts(redis_client, [make_alert()])
    forwarder = Forwarder("f1")
    assert wait_for(lambda: (forwarder.step(block_ms=10), redis_client.xlen(streams.dlq_stream("moog")))[1], 10)
    ((_, fields),) = redis_client.xrange(streams.dlq_stream("moog"))
    assert (fields[b"reason"], fields[b"attempts"]) == (b"retries_exhausted", b"3")


def test_an_outage_opens_the_breaker_burns_no_retries_and_recovers_exactly_once(moog, redis_client):
    apply_setting("circuit_breaker_threshold", 3)
    apply_setting("circuit_breaker_timeout", 1)
    apply_setting("moog_batch_size", 5)
    apply_setting("moog_max_retries", 3)
    moog.configure(status=503)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(40)]
    push_alerts(redis_client, alerts)
    forwarder = Forwarder("f1")
    breaker = CircuitBreaker(redis_client)
    assert wait_for(lambda: (forwarder.step(block_ms=10), breaker.snapshot().state == OPEN)[1], 10)
    attempts_when_opened = moog.state.requests
    deadline = time.monotonic() + 3  # the outage goes on for three breaker timeouts
    while time.monotonic() < deadline:
        forwarder.step(block_ms=10)
        time.sleep(0.01)
    assert moog.state.requests <= attempts_when_opened + 3, "only one probe per breaker timeout"
    assert redis_client.xlen(streams.dlq_stream("moog")) == 0, "no retries burned while open"
    moog.configure(reset=True)
    deliver_all(forwarder, timeout=20)
    assert breaker.snapshot().state == CLOSED
    delivered = Counter(e["custom_info"]["event_id"] for e in recorded(moog))
    assert set(delivered) == {a["event_id"] for a in alerts}
    assert max(delivered.values()) == 1


def test_an_alert_redelivered_after_delivery_is_not_sent_again(moog, redis_client):
    alert = make_alert()
    push_alerts(redis_client, [alert])
    forwarder = Forwarder("f1")
    deliver_all(forwarder)
    push_alerts(redis_client, [alert])
    deliver_all(forwarder)
    assert len(recorded(moog)) == 1


@pytest.mark.timeout(180)
def test_a_killed_forwarder_loses_nothing(moog, redis_client, child_env):
    apply_setting("forwarder_claim_idle_seconds", 1)
    apply_setting("moog_batch_size", 10)
    moog.configure(latency_ms=20)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(600)]
    push_alerts(redis_client, alerts)

    def start(name: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", "run_forwarder", "--consumer", name, *extra],
            cwd=BASE_DIR, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = start("doomed")
    try:
        assert wait_for(lambda: len(moog.events()) >= 100, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert len(moog.events()) < len(alerts), "the kill came too late to test a takeover"
    second = start("survivor", "--until-idle")
    try:
        assert second.wait(timeout=120) == 0, second.stderr.read()
    finally:
        if second.poll() is None:
            second.kill()
    delivered = Counter(e["event"]["custom_info"]["event_id"] for e in moog.events())
    assert set(delivered) == {a["event_id"] for a in alerts}, "nothing lost"
    # A request in flight when the process died may have been accepted before it could record
    # the delivery; only that one batch can arrive twice, and Moogsoft folds it by signature.
    repeated = [event_id for event_id, count in delivered.items() if count > 1]
    assert len(repeated) <= 10
    assert redis_client.xlen(streams.dlq_stream("moog")) == 0
