"""The forwarder over real HTTP against mock_moog, with real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from configcenter.runtime import get_setting
from core import contracts, streams
from core.secrets import reset_secrets
from delivery.breaker import CLOSED, OPEN, CircuitBreaker
from delivery.destinations.moogsoft import MOOGSOFT
from delivery.forwarder import Forwarder
from delivery.ratelimit import SharedRateLimit
from delivery.retry import schedule_key
from tests.delivery.support import deliver_all, recorded
from tests.support.events import make_alert, push_alerts
from tests.support.waiting import apply_setting, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def test_webhook_format_maps_every_field(moog, redis_client):
    alert = make_alert(severity="critical", trap_oid="1.3.6.1.4.1.9.9.41", event_time="2026-11-26T10:00:00+00:00")
    push_alerts(redis_client, [alert])
    forwarder = Forwarder("f1")
    deliver_all(forwarder)
    (event,) = recorded(moog)
    assert event["signature"] == alert["signature"]
    assert (event["source_id"], event["source"], event["external_id"]) == (
        "core-rtr-01", "core-rtr-01", alert["event_id"],
    )  # fmt: skip
    assert event["custom_info"]["correlation_id"] == alert["correlation_id"]
    assert (event["severity"], event["manager"], event["agent_time"]) == (5, "MUTT", 1795687200)
    assert event["description"] == alert["description"]
    assert event["custom_info"]["event_id"] == alert["event_id"]
    assert event["custom_info"]["team"] == "network-ops"
    assert redis_client.exists(MOOGSOFT.delivered_key(alert["event_id"]))
    assert redis_client.xpending(streams.alerts_stream(), contracts.FORWARDERS_GROUP)["pending"] == 0


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
    assert redis_client.xpending(streams.alerts_stream(), contracts.FORWARDERS_GROUP)["pending"] == 0
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
    assert redis_client.xpending(streams.alerts_stream(), contracts.FORWARDERS_GROUP)["pending"] == 0


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
    apply_setting("moog_timeout", 0.5)
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
    # the delivery; only those batches (one per lane) can arrive twice, and Moogsoft folds them by signature.
    repeated = [event_id for event_id, count in delivered.items() if count > 1]
    assert len(repeated) <= 10 * get_setting("forwarder_concurrency")
    assert redis_client.xlen(streams.dlq_stream("moog")) == 0


# --- the gate: one Redis call per request ------------------------------------------------------------


def test_a_steady_stream_costs_one_redis_call_per_request(moog, redis_client, monkeypatch):
    apply_setting("moog_batch_size", 1)
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(25)])
    forwarder = Forwarder("f1")
    # The first request reads its alert, the second checks the first batch read ahead: then it flows.
    assert [forwarder.step(block_ms=10) for _ in range(2)] == [1, 1]
    calls: list[str] = []

    def counted(name: str, call):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return call(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(redis.Redis, "execute_command", counted("command", redis.Redis.execute_command))
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted("pipeline", redis.client.Pipeline.execute))
    monkeypatch.setattr(forwarder.scripts._gate, "send", counted("script", forwarder.scripts._gate.send))
    assert sum(forwarder.step(block_ms=10) for _ in range(20)) == 20
    assert calls.count("script") == 20
    assert len(calls) <= 22, f"one call per request, plus at most a trim and a settings refresh: {calls}"


def test_an_alert_read_ahead_but_delivered_meanwhile_is_acknowledged_not_sent(moog, redis_client):
    apply_setting("moog_batch_size", 1)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(4)]
    push_alerts(redis_client, alerts)
    forwarder = Forwarder("f1")
    assert [forwarder.step(block_ms=10) for _ in range(2)] == [1, 1]
    assert forwarder.holding, "the third alert is in hand, the fourth read ahead"
    redis_client.set(MOOGSOFT.delivered_key(alerts[3]["event_id"]), 1)  # another forwarder delivered that event
    deliver_all(forwarder)
    assert [event["custom_info"]["event_id"] for event in recorded(moog)] == [a["event_id"] for a in alerts[:3]]
    assert redis_client.xpending(streams.alerts_stream(), contracts.FORWARDERS_GROUP)["pending"] == 0
    assert redis_client.xlen(streams.alerts_stream()) == 0


def test_the_gate_survives_redis_forgetting_its_scripts(moog, redis_client):
    apply_setting("moog_batch_size", 1)
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(4)])
    forwarder = Forwarder("f1")
    assert [forwarder.step(block_ms=10) for _ in range(2)] == [1, 1]
    redis_client.script_flush()  # as after a Redis restart
    deliver_all(forwarder)
    assert len(recorded(moog)) == 4


def test_an_idle_forwarder_spends_no_rate_limit_tokens(moog, redis_client):
    apply_setting("moog_batch_size", 1)
    apply_setting("moog_rate_limit", 2)
    apply_setting("moog_rate_period", 3600)
    forwarder = Forwarder("f1")
    for _ in range(5):
        assert forwarder.step(block_ms=1) == 0
    push_alerts(redis_client, [make_alert(signature="h:1:"), make_alert(signature="h:2:")])
    deliver_all(forwarder, timeout=5)
    assert len(recorded(moog)) == 2, "both tokens were still there"


def test_alerts_in_hand_go_back_to_the_stream_when_the_forwarder_closes(moog, redis_client):
    apply_setting("moog_batch_size", 1)
    apply_setting("moog_rate_limit", 1)
    apply_setting("moog_rate_period", 3600)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(3)]
    push_alerts(redis_client, alerts)
    forwarder = Forwarder("f1")
    assert forwarder.step(block_ms=10) == 1
    assert forwarder.step(block_ms=10) == 0, "no token left: the others wait in hand"
    assert forwarder.holding
    forwarder.close()
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    assert redis_client.xpending(stream, group)["pending"] == 0
    assert redis_client.xlen(stream) == 2
    assert [c["name"] for c in redis_client.xinfo_consumers(stream, group)] == [], "f1 left the group"
    apply_setting("moog_rate_limit", 100)
    redis_client.delete(forwarder.rate_limit.key)
    deliver_all(Forwarder("f2"))
    assert sorted(e["custom_info"]["event_id"] for e in recorded(moog)) == sorted(a["event_id"] for a in alerts)


def test_alerts_read_ahead_go_back_too_when_the_forwarder_closes(moog, redis_client):
    apply_setting("moog_batch_size", 1)
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(5)])
    forwarder = Forwarder("f1")
    assert forwarder.step(block_ms=10) == 1
    assert forwarder.holding, "the gate after the delivery read the next alerts"
    forwarder.close()
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    assert redis_client.xpending(stream, group)["pending"] == 0
    assert redis_client.xlen(stream) == 4
    assert [c["name"] for c in redis_client.xinfo_consumers(stream, group)] == []


def test_a_delivery_whose_recording_failed_is_recorded_later_not_sent_again(moog, redis_client, monkeypatch):
    apply_setting("moog_batch_size", 1)
    alert = make_alert()
    push_alerts(redis_client, [alert])
    forwarder = Forwarder("f1")
    gate = forwarder.scripts.gate

    def connection_lost_while_recording(**kwargs):
        if kwargs["delivered"]:
            raise redis.ConnectionError("connection lost")
        return gate(**kwargs)

    monkeypatch.setattr(forwarder.scripts, "gate", connection_lost_while_recording)
    with pytest.raises(redis.ConnectionError):
        forwarder.step(block_ms=10)
    assert len(recorded(moog)) == 1
    assert not redis_client.exists(MOOGSOFT.delivered_key(alert["event_id"]))
    monkeypatch.undo()
    forwarder.step(block_ms=10)
    assert redis_client.exists(MOOGSOFT.delivered_key(alert["event_id"]))
    assert redis_client.xpending(streams.alerts_stream(), contracts.FORWARDERS_GROUP)["pending"] == 0
    deliver_all(forwarder)
    assert len(recorded(moog)) == 1


def test_the_in_flight_record_covers_each_post_and_is_cleared_whatever_the_answer(moog, redis_client, monkeypatch):
    apply_setting("moog_batch_size", 5)
    apply_setting("circuit_breaker_threshold", 100)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(20)]
    push_alerts(redis_client, alerts)
    forwarder = Forwarder("f1")
    seen: list[set[bytes]] = []
    post = forwarder.http.post

    def observed(url, body, headers, **kwargs):
        seen.append(set(redis_client.hkeys(MOOGSOFT.inflight_key())))  # what a takeover would find right now
        return post(url, body, headers, **kwargs)

    monkeypatch.setattr(forwarder.http, "post", observed)
    moog.configure(status=500, times=1)
    forwarder.step(block_ms=10)
    moog.configure(status=400, times=1)
    deliver_all(forwarder)
    assert len(seen) >= 5
    assert all(len(fields) == len(seen[0]) == 5 for fields in seen[:4]), "every alert of a batch, before its POST"
    assert redis_client.hlen(MOOGSOFT.inflight_key()) == 0, "confirmed after a 2xx, a retry or the DLQ alike"
    assert redis_client.xlen(streams.dlq_stream("moog")) == 5, "the batch refused with 400"


class _Killed(BaseException):
    """What a SIGKILL leaves: the step stops where it is, nothing after it runs."""


def test_a_takeover_held_by_the_rate_limit_and_killed_before_its_post_leaves_the_copies_marked_resent(
    moog, redis_client, monkeypatch
):
    apply_setting("moog_timeout", 0.5)
    apply_setting("forwarder_claim_idle_seconds", 1)
    apply_setting("moog_batch_size", 5)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(3)]
    push_alerts(redis_client, alerts)
    doomed = Forwarder("doomed")

    def killed_mid_post(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(doomed.http, "post", killed_mid_post)
    with pytest.raises(_Killed):
        doomed.step(block_ms=10)
    assert redis_client.hlen(MOOGSOFT.inflight_key()) == 3, "recorded in flight before the POST"

    # The second forwarder takes them over, is held by the rate limit, and is killed before its POST.
    apply_setting("moog_rate_limit", 1)
    apply_setting("moog_rate_period", 3600)
    SharedRateLimit(redis_client).take(1, 3600)  # the one request of the period is spent
    time.sleep(1.1)
    taker = Forwarder("taker")
    assert wait_for(lambda: (taker.step(block_ms=10), taker.holding)[1], 10), "took them over and holds them"
    assert not recorded(moog)

    apply_setting("moog_rate_limit", 50)
    apply_setting("moog_rate_period", 1)
    redis_client.delete(SharedRateLimit(redis_client).key)
    time.sleep(1.1)  # the taker is gone: its entries go idle
    survivor = Forwarder("survivor")
    deliver_all(survivor)
    sent = recorded(moog)
    assert sorted(e["custom_info"]["event_id"] for e in sent) == sorted(a["event_id"] for a in alerts)
    assert all(e["custom_info"]["resent"] is True for e in sent), "still marked after the second takeover"
    assert redis_client.hlen(MOOGSOFT.inflight_key()) == 0


def test_alerts_given_back_on_a_graceful_stop_leave_no_in_flight_record(moog, redis_client):
    apply_setting("moog_batch_size", 5)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(12)]
    push_alerts(redis_client, alerts)
    first = Forwarder("first")
    first.step(block_ms=10)
    first.step(block_ms=10)
    assert first.holding, "alerts read ahead are in hand"
    first.close()
    second = Forwarder("second")
    deliver_all(second)
    second.close()
    assert sorted(e["custom_info"]["event_id"] for e in recorded(moog)) == sorted(a["event_id"] for a in alerts)
    assert redis_client.hlen(MOOGSOFT.inflight_key()) == 0, "given back: the old entries' records are gone"


def test_the_sweep_removes_in_flight_records_of_entries_no_longer_pending(moog, redis_client):
    forwarder = Forwarder("sweeper")  # creates the group
    push_alerts(redis_client, [make_alert(), make_alert()])
    [(_, [(pending_id, _), (acked_id, _)])] = redis_client.xreadgroup(
        contracts.FORWARDERS_GROUP, "gone", {streams.alerts_stream(): ">"}, count=2
    )
    redis_client.xack(streams.alerts_stream(), contracts.FORWARDERS_GROUP, acked_id)
    redis_client.hset(MOOGSOFT.inflight_key(), mapping={pending_id: 1, acked_id: 1, b"not-an-id": 1})
    assert forwarder.scripts.sweep_in_flight() == 2
    assert redis_client.hkeys(MOOGSOFT.inflight_key()) == [pending_id], "a pending entry's record stays for a takeover"
    forwarder.close()


def test_a_scheduled_retry_takes_its_in_flight_record_with_it_in_one_call(moog, redis_client, monkeypatch):
    apply_setting("moog_batch_size", 5)
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(3)])
    forwarder = Forwarder("f1")

    def connection_lost(*args, **kwargs):  # any second call after the schedule would be lost with it
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(forwarder.client, "hdel", connection_lost)
    moog.configure(status=500, times=1)
    assert forwarder.step(block_ms=10) == 3
    assert forwarder.retries.depth() == 3
    assert redis_client.hlen(MOOGSOFT.inflight_key()) == 0, "answered with a retry: no longer in flight"
    forwarder.close()
