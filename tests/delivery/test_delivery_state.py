"""The admin and every /metrics show the delivery state as it is in Redis, not a gauge of their own."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.urls import reverse

from core import contracts, streams
from delivery.breaker import OPEN, CircuitBreaker
from delivery.forwarder import Forwarder
from delivery.retry import schedule_key
from tests.support.events import make_alert, push_alerts
from tests.support.waiting import apply_setting, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def open_the_breaker_with_alerts_stuck(moog, redis_client, count: int = 9) -> Forwarder:
    """A Moogsoft outage driven through a real forwarder: the breaker opens; the alerts end up scheduled
    for a retry, held in hand, or unread."""
    apply_setting("circuit_breaker_threshold", 2)
    apply_setting("circuit_breaker_timeout", 600)  # stays open for the whole test
    apply_setting("moog_batch_size", 2)
    apply_setting("moog_retry_max_delay", 600)
    moog.configure(status=503, retry_after=600)  # scheduled retries stay scheduled
    push_alerts(redis_client, [make_alert(signature=f"h:{i}:") for i in range(count)])
    forwarder = Forwarder("f1")
    breaker = CircuitBreaker(redis_client)
    assert wait_for(lambda: (forwarder.step(block_ms=10), breaker.snapshot().state == OPEN)[1], 10)
    for _ in range(3):
        forwarder.step(block_ms=10)  # waits: nothing is sent, what it holds stays held
    return forwarder


def truth(redis_client) -> dict[str, int]:
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    held = redis_client.xpending(stream, group)["pending"]
    return {
        "scheduled": redis_client.zcard(schedule_key()),
        "held": held,
        "unread": redis_client.xlen(stream) - held,
    }


def test_the_queues_page_shows_every_alert_stuck_in_an_outage(moog, redis_client, admin_client_alice):
    forwarder = open_the_breaker_with_alerts_stuck(moog, redis_client)
    expected = truth(redis_client)
    assert expected["scheduled"] == 4, "two batches failed before the breaker opened"
    assert sum(expected.values()) == 9
    page = admin_client_alice.get(reverse("admin:delivery_dlq_queues")).content.decode()
    assert 'id="breaker-state">open<' in page
    assert 'id="alerts-waiting">9<' in page, "every stuck alert is counted"
    assert f'id="retry-scheduled">{expected["scheduled"]}<' in page
    assert f'id="alerts-held">{expected["held"]}<' in page
    assert f'id="alerts-unread">{expected["unread"]}<' in page
    forwarder.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def samples(text: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of ``name`` in a Prometheus text page."""
    found = re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, flags=re.MULTILINE)
    return [(labels, float(value)) for labels, value in found]


@pytest.mark.timeout(120)
def test_the_web_metrics_show_the_breaker_open_and_the_alerts_waiting(moog, redis_client, child_env, tmp_path):
    """As `mutt up` serves it: gunicorn with multiprocess metrics files, not the process that forwards."""
    forwarder = open_the_breaker_with_alerts_stuck(moog, redis_client)
    expected = truth(redis_client)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "mutt_project/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=BASE_DIR, env={**child_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while fetch(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        for _ in range(4):  # whichever worker answers, the same truth
            status, text = fetch(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            assert samples(text, "mutt_forwarder_breaker_state") == [('{destination="moog"}', 2.0)]
            assert samples(text, "mutt_forwarder_retry_schedule_depth") == [("", expected["scheduled"])]
            assert samples(text, "mutt_forwarder_alerts_held") == [("", expected["held"])]
            assert samples(text, "mutt_forwarder_alerts_unread") == [("", expected["unread"])]
            assert samples(text, "mutt_forwarder_dlq_depth") == [("", 0.0)]
    finally:
        server.terminate()
        server.wait(timeout=30)
        forwarder.close()
