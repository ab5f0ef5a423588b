"""A real ``run_forwarder`` process against mock_moog: key rotation, and a kill in the middle of a request."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core import streams
from delivery.breaker import OPEN, CircuitBreaker
from devtools.mock_moog import MockMoog
from tests.support.events import make_alert, push_alerts
from tests.support.waiting import apply_setting, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def start_forwarder(env: dict[str, str], name: str, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "manage.py", "run_forwarder", "--consumer", name, *extra],
            cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def delivered_ids(moog: MockMoog) -> Counter[str]:
    return Counter(record["event"]["custom_info"]["event_id"] for record in moog.events())


@pytest.mark.timeout(240)
def test_a_key_rotated_at_moogsoft_mid_stream_loses_nothing_and_dead_letters_nothing(
    moog, redis_client, child_env, tmp_path
):
    current, following = tmp_path / "moog.current", tmp_path / "moog.next"
    current.write_text("old-key\n")
    following.write_text("new-key\n")
    env = {
        **child_env,
        "MOOG_API_KEY_CURRENT_FILE": str(current),
        "MOOG_API_KEY_NEXT_FILE": str(following),
        "SECRET_REFRESH_SECONDS": "3600",  # only a refusal makes the forwarder read the files again
    }
    apply_setting("moog_batch_size", 5)
    apply_setting("moog_max_retries", 1)  # were a refusal an attempt, alerts would reach the DLQ at once
    apply_setting("circuit_breaker_threshold", 3)
    apply_setting("circuit_breaker_timeout", 1)
    moog.configure(require_auth="old-key")
    dlq = streams.dlq_stream("moog")
    log = tmp_path / "forwarder.log"
    alerts = [make_alert(signature=f"h:{i}:") for i in range(100)]
    push_alerts(redis_client, alerts)
    forwarder = start_forwarder(env, "rotating", log)
    try:
        assert wait_for(lambda: len(moog.events()) >= 20, timeout=60), log.read_text()
        # Moogsoft moves to the new key while alerts flow: the forwarder switches to NEXT.
        moog.configure(require_auth="new-key")
        more = [make_alert(signature=f"h:{i}:") for i in range(100, 200)]
        push_alerts(redis_client, more)
        alerts += more
        assert wait_for(lambda: len(delivered_ids(moog)) == 200, timeout=60), log.read_text()
        assert redis_client.xlen(dlq) == 0

        # Moogsoft now wants a key MUTT does not have: an outage, alerts held, none dead-lettered.
        moog.configure(require_auth="newest-key")
        late = [make_alert(signature=f"h:{i}:") for i in range(200, 250)]
        push_alerts(redis_client, late)
        alerts += late
        breaker = CircuitBreaker(redis_client)
        assert wait_for(lambda: breaker.snapshot().state == OPEN, timeout=30), log.read_text()
        time.sleep(3)  # a few half-open probes, each refused
        assert redis_client.xlen(dlq) == 0, "a refused credential is an outage, not a poison alert"
        assert len(delivered_ids(moog)) == 200
        # The operator puts the new key in NEXT: the next probe's refusal reads it, and it flows again.
        following.write_text("newest-key\n")
        assert wait_for(lambda: len(delivered_ids(moog)) == 250, timeout=60), log.read_text()
    finally:
        stop(forwarder)
    delivered = delivered_ids(moog)
    assert set(delivered) == {alert["event_id"] for alert in alerts}, "nothing lost"
    assert max(delivered.values()) == 1, "each alert delivered once"
    assert redis_client.xlen(dlq) == 0
    text = log.read_text()
    assert "old-key" not in text, "no key in the log"
    assert "new-key" not in text, "no key in the log"
    events: list[dict[str, Any]] = moog.events()
    assert {record["auth"] for record in events} == {"basic"}


@pytest.mark.timeout(180)
def test_a_forwarder_killed_mid_request_leaves_its_copies_marked_resent_and_counted(
    moog, redis_client, child_env, tmp_path
):
    from prometheus_client import REGISTRY

    from delivery.forwarder import Forwarder
    from tests.delivery.support import deliver_all

    takeover = {"destination": "moog", "after": "takeover"}
    apply_setting("moog_timeout", 4)
    apply_setting("forwarder_claim_idle_seconds", 5)
    apply_setting("moog_batch_size", 10)
    apply_setting("forwarder_concurrency", 3)
    moog.configure(latency_ms=2000)  # every POST is in flight for two seconds
    alerts = [make_alert(signature=f"h:{i}:") for i in range(90)]
    push_alerts(redis_client, alerts)
    log = tmp_path / "forwarder.log"
    doomed = start_forwarder(child_env, "doomed", log)
    try:
        # The first round of requests was answered and a second is in flight: kill the process now.
        assert wait_for(lambda: moog.state.requests >= 4, timeout=60), log.read_text()
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    time.sleep(2.5)  # mock_moog accepts what was in flight, although nobody waits for the answer
    moog.configure(latency_ms=0)
    before = REGISTRY.get_sample_value("mutt_forwarder_alerts_resent_total", takeover) or 0.0
    survivor = Forwarder("survivor")
    deliver_all(survivor, timeout=60)
    survivor.close()
    counted = (REGISTRY.get_sample_value("mutt_forwarder_alerts_resent_total", takeover) or 0) - before

    copies: dict[str, list[dict[str, Any]]] = {}
    for record in moog.events():  # in the order mock_moog recorded them
        copies.setdefault(record["event"]["custom_info"]["event_id"], []).append(record["event"])
    assert set(copies) == {alert["event_id"] for alert in alerts}, "nothing lost"
    repeated = {event_id for event_id, sent in copies.items() if len(sent) > 1}
    assert repeated, "the kill came mid-request: what was in flight arrived, unconfirmed"
    for event_id in repeated:
        first, *again = copies[event_id]
        assert first["custom_info"]["resent"] is False
        assert all(copy["custom_info"]["resent"] is True for copy in again), "every copy is marked"
        assert {copy["custom_info"]["event_id"] for copy in again} == {event_id}, "the same id as the first"
    marked = {event_id for event_id, sent in copies.items() if any(e["custom_info"]["resent"] for e in sent)}
    assert repeated <= marked
    assert counted == len(marked), "each resent alert is counted"
    assert len(marked) <= 10 * 3, "only what was in flight: one batch per lane"
    assert redis_client.xlen(streams.dlq_stream("moog")) == 0
