"""run_alerter as real processes: a SIGKILL mid-batch loses and duplicates nothing; SIGTERM is graceful."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core import contracts, streams
from core.audit import Actor
from rules import services
from rules.models import AlertRule, EventAuditLog
from tests.support.events import make_event, push
from tests.support.waiting import apply_setting, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def start_alerter(env: dict[str, str], name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_alerter", "--consumer", name, *extra],
        cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def page_rule(clean_pipeline):
    return services.create(
        AlertRule, actor=Actor.cli("ops"), name="down", match_type="contains", match_string="changed state to down"
    )


@pytest.mark.timeout(240)
def test_a_killed_alerter_loses_and_duplicates_nothing(redis_client, child_env, page_rule):
    apply_setting("alerter_batch_size", 200)
    apply_setting("alerter_claim_idle_seconds", 1)
    total = 6000
    events = [make_event(hostname=f"host-{i % 50}") for i in range(total)]
    first = start_alerter(child_env, "doomed")
    try:
        push(redis_client, events)
        assert wait_for(lambda: EventAuditLog.objects.count() >= 600, timeout=60), "first alerter made no progress"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    done_by_first = EventAuditLog.objects.count()
    assert done_by_first < total, "the kill came too late to test a takeover"

    second = start_alerter(child_env, "survivor", "--until-idle")
    try:
        assert second.wait(timeout=180) == 0, second.stderr.read()
    finally:
        if second.poll() is None:
            second.kill()

    assert EventAuditLog.objects.count() == total
    assert EventAuditLog.objects.values("event_id").distinct().count() == total
    alert_ids = [streams.decode(fields)["event_id"] for _, fields in redis_client.xrange(streams.alerts_stream())]
    assert len(alert_ids) == total, "every event alerted"
    assert len(set(alert_ids)) == total, "no alert duplicated"
    assert redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"] == 0
    assert redis_client.xlen(streams.dlq_stream("alerter")) == 0


@pytest.mark.timeout(120)
def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(redis_client, child_env, page_rule):
    process = start_alerter(child_env, "graceful")
    try:
        push(redis_client, [make_event() for _ in range(500)])
        assert wait_for(EventAuditLog.objects.exists, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    pending = redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"]
    assert pending == 0, "nothing left half-done by the stopped alerter"
    audited = EventAuditLog.objects.count()
    assert len(redis_client.xrange(streams.alerts_stream())) == audited
