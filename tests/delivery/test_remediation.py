"""Remediation passes against real Redis and PostgreSQL, with a real local HTTP server as Moogsoft's health
endpoint and as the notification webhook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import override_settings
from prometheus_client import REGISTRY

from core import contracts, streams
from core.redis import key
from core.secrets import reset_secrets
from delivery import dlq
from delivery.breaker import CircuitBreaker
from delivery.models import DlqAction
from delivery.remediation import Remediator, health_url
from tests.support.dlq_helpers import (
    LocalHTTPServer,
    add_alerter_entry,
    add_moog_entry,
    closed_port_url,
    make_alert,
    stream_payloads,
)
from tests.support.events import make_event
from tests.support.waiting import apply_setting, wait_for

TOKEN = "pd-routing-key-0123456789abcdef"


@pytest.fixture
def moog(clean_pipeline, redis_client, settings):
    """Empty queues, no replay counts, a closed breaker, and a local server answering /health and /notify."""
    settings.VAULT_ADDR = ""
    settings.MUTT_SECRETS_ENV = {"NOTIFY_WEBHOOK_TOKEN": TOKEN}
    reset_secrets()

    def clear() -> None:
        for name in redis_client.scan_iter(match=key("replays", "*")):
            redis_client.delete(name)
        CircuitBreaker(redis_client).reset()
        redis_client.delete(key("remediation", "lock"))

    clear()
    with LocalHTTPServer() as server:
        apply_setting("moog_health_url", f"{server.url}/health")
        apply_setting("notify_webhook_url", f"{server.url}/notify")
        yield server
    clear()
    reset_secrets()


@pytest.fixture
def remediator(redis_client):
    return Remediator(client=redis_client)


def skipped(queue: str, reason: str) -> float:
    labels = {"queue": queue, "reason": reason}
    return REGISTRY.get_sample_value("mutt_remediation_skipped_total", labels) or 0.0


def dlq_ids(client, queue: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(streams.dlq_stream(queue))]


# --- Moogsoft DLQ ----------------------------------------------------------------------------------


def test_transient_moog_entries_are_replayed_when_the_breaker_is_closed_and_moogsoft_is_healthy(
    moog, remediator, redis_client
):
    entry_id, alert = add_moog_entry(redis_client)
    result = remediator.step()
    assert result.replayed == {"moog": 1}
    assert stream_payloads(redis_client, streams.alerts_stream()) == [{**alert, "attempts": 0}]
    assert dlq_ids(redis_client, "moog") == []
    [probe] = moog.to("/health")
    assert probe.method == "GET", "the health probe is a GET, never a fake event"
    assert moog.to("/notify") == []
    row = DlqAction.objects.get()
    assert (row.actor, row.action, row.entry_ids) == ("system:remediation", "replay", [entry_id])
    assert row.request_id, "each pass runs under its own request id"


def test_an_open_breaker_skips_the_moog_dlq_without_probing(moog, remediator, redis_client):
    entry_id, _ = add_moog_entry(redis_client)
    CircuitBreaker(redis_client).record(False, threshold=1)
    before = skipped("moog", "breaker_open")
    result = remediator.step()
    assert result.skipped == {"moog": "breaker_open"}
    assert skipped("moog", "breaker_open") == before + 1
    assert dlq_ids(redis_client, "moog") == [entry_id]
    assert moog.to("/health") == []


@pytest.mark.parametrize("failure", ["http_503", "unreachable"])
def test_a_failed_health_probe_skips_the_moog_dlq(moog, remediator, redis_client, failure):
    entry_id, _ = add_moog_entry(redis_client)
    if failure == "http_503":
        moog.respond("/health", 503, b'{"status": "unavailable"}')
    else:
        apply_setting("moog_health_url", f"{closed_port_url()}/health")
    before = skipped("moog", "health_failed")
    result = remediator.step()
    assert result.skipped == {"moog": "health_failed"}
    assert skipped("moog", "health_failed") == before + 1
    assert dlq_ids(redis_client, "moog") == [entry_id]
    assert redis_client.xlen(streams.alerts_stream()) == 0


def test_alerts_dead_lettered_for_a_refused_key_are_replayed(moog, remediator, redis_client):
    """Before a refused Moogsoft key counted as an outage, alerts went to the DLQ as http_401/403."""
    entries = [add_moog_entry(redis_client, reason=r, status=int(r[5:]))[0] for r in ("http_401", "http_403")]
    result = remediator.step()
    assert result.replayed == {"moog": 2}
    assert dlq_ids(redis_client, "moog") == []
    assert DlqAction.objects.get().entry_ids == entries


def test_permanent_failures_are_never_replayed(moog, remediator, redis_client):
    permanent = [add_moog_entry(redis_client, reason=r, status=400)[0] for r in ("http_400", "http_404", "malformed")]
    permanent_alerter = [add_alerter_entry(redis_client, reason=r)[0] for r in ("malformed", "processing_error")]
    for _ in range(3):
        result = remediator.step()
        assert (result.replayed, result.skipped) == ({}, {})
    assert dlq_ids(redis_client, "moog") == permanent
    assert dlq_ids(redis_client, "alerter") == permanent_alerter
    assert moog.to("/health") == [], "nothing to replay, nothing to probe"
    assert not DlqAction.objects.exists()


def test_at_most_a_batch_is_replayed_per_pass_oldest_first(moog, remediator, redis_client):
    apply_setting("remediation_batch_size", 2)
    ids = [add_moog_entry(redis_client)[0] for _ in range(3)]
    add_moog_entry(redis_client, reason="http_400")
    assert remediator.step().replayed == {"moog": 2}
    assert dlq_ids(redis_client, "moog")[0] == ids[2]


def test_with_a_real_moogsoft_and_no_health_url_the_moog_dlq_waits(moog, remediator, redis_client):
    apply_setting("moog_url", "https://moog.example.test/events")
    apply_setting("moog_health_url", "")
    assert health_url() is None
    add_moog_entry(redis_client)
    assert remediator.step().skipped == {"moog": "health_unconfigured"}


def test_the_default_health_url_is_the_local_mock(moog):
    apply_setting("moog_health_url", "")
    assert health_url() == f"http://127.0.0.1:{django_settings.MUTT_MOCK_MOOG_PORT}/health"


# --- alerter DLQ -----------------------------------------------------------------------------------


def test_shed_events_go_back_to_the_ingest_stream(moog, remediator, redis_client):
    _, event = add_alerter_entry(redis_client, reason="shed")
    _, later = add_alerter_entry(redis_client, reason="database_error")
    result = remediator.step()
    assert result.replayed == {"alerter": 2}
    assert stream_payloads(redis_client, streams.ingest_stream()) == [event, later]
    assert dlq_ids(redis_client, "alerter") == []


def test_shed_events_wait_while_the_ingest_backlog_is_high_then_fill_only_the_room(moog, remediator, redis_client):
    apply_setting("ingest_max_batch", 100)  # must not exceed the queue depth
    apply_setting("ingest_max_queue_depth", 1000)
    ids = [add_alerter_entry(redis_client)[0] for _ in range(5)]
    pipe = redis_client.pipeline()
    for _ in range(500):
        pipe.xadd(streams.ingest_stream(), streams.encode(make_event()))
    pipe.execute()
    before = skipped("alerter", "ingest_backlog_high")
    assert remediator.step().skipped == {"alerter": "ingest_backlog_high"}
    assert skipped("alerter", "ingest_backlog_high") == before + 1
    assert dlq_ids(redis_client, "alerter") == ids
    redis_client.xtrim(
        streams.ingest_stream(), maxlen=498, approximate=False
    )  # alerters caught up: room for 2 below half
    assert remediator.step().replayed == {"alerter": 2}
    assert dlq_ids(redis_client, "alerter") == ids[2:]


def test_shed_events_wait_while_the_alert_backlog_would_shed_them_again(moog, remediator, redis_client):
    apply_setting("alerter_queue_warn_threshold", 1)
    add_alerter_entry(redis_client)
    for _ in range(2):
        redis_client.xadd(streams.alerts_stream(), streams.encode(make_alert()))
    assert remediator.step().skipped == {"alerter": "alert_backlog_high"}


def test_shed_events_wait_while_any_destinations_backlog_would_shed_them_again(moog, remediator, redis_client):
    # The alerter sheds on the longest destination stream: a second destination's alone holds replays back.
    apply_setting("alerter_queue_warn_threshold", 1)
    add_alerter_entry(redis_client)
    second = streams.destination_stream("second")
    redis_client.delete(second)
    try:
        for _ in range(2):
            redis_client.xadd(second, streams.encode(make_alert()))
        with override_settings(MUTT_DESTINATIONS=[contracts.DEFAULT_DESTINATION, "second"]):
            assert remediator.step().skipped == {"alerter": "alert_backlog_high"}
        assert remediator.step().replayed == {"alerter": 1}, "Moogsoft's stream alone is short"
    finally:
        redis_client.delete(second)


# --- poison ----------------------------------------------------------------------------------------


def test_an_entry_replayed_too_often_goes_to_the_dead_queue_with_one_notification(moog, remediator, redis_client):
    apply_setting("max_poison_retries", 2)
    alert = make_alert()
    for replay in (1, 2):
        add_moog_entry(redis_client, alert=alert)  # Moogsoft refused it again: a new DLQ entry, same event
        assert remediator.step().replayed == {"moog": 1}, f"replay {replay}"
    add_moog_entry(redis_client, alert=alert)
    result = remediator.step()
    assert (result.replayed, result.dead, result.notification) == ({"moog": 0}, {"moog": 1}, "sent")
    [dead] = dlq.list_entries(redis_client, "dead").entries
    assert (dead.origin, dead.fields["replays"], dead.event_key) == ("moog", "2", alert["event_id"])
    [notification] = moog.to("/notify", "POST")
    body = notification.json()
    assert body["routing_key"] == TOKEN
    assert body["payload"]["custom_details"]["count"] == 1
    assert body["payload"]["custom_details"]["sample_event_ids"] == [alert["event_id"]]
    assert remediator.step().notification is None, "nothing new, nothing sent"
    assert len(moog.to("/notify")) == 1


def test_one_pass_sends_one_notification_for_all_poison_of_both_queues(moog, remediator, redis_client):
    apply_setting("max_poison_retries", 1)
    events = []
    for _ in range(3):
        _, alert = add_moog_entry(redis_client)
        redis_client.set(dlq.replay_count_key(alert["event_id"]), 1)
        events.append(alert["event_id"])
    _, event = add_alerter_entry(redis_client)
    redis_client.set(dlq.replay_count_key(event["event_id"]), 1)
    add_alerter_entry(redis_client)  # replayed for the first time
    result = remediator.step()
    assert (result.dead, result.replayed) == ({"moog": 3, "alerter": 1}, {"moog": 0, "alerter": 1})
    [notification] = moog.to("/notify", "POST")
    details = notification.json()["payload"]["custom_details"]
    assert (details["count"], details["queues"]) == (4, {"alerter": 1, "moog": 3})
    assert set(details["sample_event_ids"]) == {*events, event["event_id"]}
    assert redis_client.xlen(streams.dlq_stream("dead")) == 4
    assert DlqAction.objects.filter(action="dead", actor="system:remediation").count() == 2


def test_a_failing_webhook_does_not_stop_remediation(moog, remediator, redis_client):
    apply_setting("max_poison_retries", 1)
    _, alert = add_moog_entry(redis_client)
    redis_client.set(dlq.replay_count_key(alert["event_id"]), 1)
    moog.respond("/notify", 500)
    before = REGISTRY.get_sample_value("mutt_remediation_notifications_total", {"outcome": "failed"}) or 0.0
    result = remediator.step()
    assert (result.dead, result.notification, result.failed) == ({"moog": 1}, "failed", [])
    assert REGISTRY.get_sample_value("mutt_remediation_notifications_total", {"outcome": "failed"}) == before + 1
    assert redis_client.xlen(streams.dlq_stream("dead")) == 1


def test_depth_gauges_follow_the_queues(moog, remediator, redis_client):
    add_moog_entry(redis_client, reason="http_400")
    add_alerter_entry(redis_client, reason="malformed")
    add_alerter_entry(redis_client, reason="malformed")
    remediator.step()
    depth = {q: REGISTRY.get_sample_value("mutt_dlq_depth", {"queue": q}) for q in contracts.DLQ_QUEUES}
    assert depth == {"alerter": 2.0, "moog": 1.0, "dead": 0.0}


def test_only_one_worker_runs_a_pass_at_a_time(moog, remediator, redis_client):
    entry_id, _ = add_moog_entry(redis_client)
    redis_client.set(key("remediation", "lock"), "another-worker", ex=60)
    assert remediator.step().skipped == {"all": "other_worker_active"}
    assert dlq_ids(redis_client, "moog") == [entry_id]
    redis_client.delete(key("remediation", "lock"))
    assert remediator.step().replayed == {"moog": 1}
    assert redis_client.get(key("remediation", "lock")) is None, "released after the pass"


# --- the command -----------------------------------------------------------------------------------


def test_the_command_runs_one_pass_with_once(moog, redis_client):
    add_alerter_entry(redis_client)
    call_command("run_remediation", "--once")
    assert redis_client.xlen(streams.ingest_stream()) == 1


def test_the_worker_process_replays_and_stops_cleanly_on_sigterm(moog, redis_client, child_env):
    _, event = add_alerter_entry(redis_client)
    manage = Path(django_settings.BASE_DIR) / "manage.py"
    process = subprocess.Popen(
        [sys.executable, str(manage), "run_remediation"], env=child_env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: redis_client.xlen(streams.ingest_stream()) == 1, timeout=30)
        assert stream_payloads(redis_client, streams.ingest_stream()) == [event]
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5, "a sleeping worker honours SIGTERM at once"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert DlqAction.objects.filter(actor="system:remediation", action="replay").count() == 1
