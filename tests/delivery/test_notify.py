"""Poison notifications over real HTTP to a local webhook: PagerDuty Events v2 or plain JSON, never raising,
never logging the token."""

from __future__ import annotations

import logging
import socket

import pytest
from prometheus_client import REGISTRY

from core import streams
from core.secrets import reset_secrets
from delivery import notify
from delivery.notify import PoisonReport, notify_poison
from tests.support.dlq_helpers import LocalHTTPServer, closed_port_url
from tests.support.waiting import apply_setting

TOKEN = "R0uting-Key-Süper-Secret-7f3a9c"
REPORT = PoisonReport(
    count=3, queues={"moog": 2, "alerter": 1}, sample_event_ids=["ev-1", "ev-2", "ev-3"], max_replays=5
)

pytestmark = pytest.mark.django_db(transaction=True)  # settings changes are published on commit


@pytest.fixture
def webhook(settings):
    settings.VAULT_ADDR = ""
    settings.MUTT_SECRETS_ENV = {"NOTIFY_WEBHOOK_TOKEN": TOKEN}
    reset_secrets()
    with LocalHTTPServer() as server:
        apply_setting("notify_webhook_url", f"{server.url}/notify")
        yield server
    reset_secrets()


def sent(outcome: str) -> float:
    return REGISTRY.get_sample_value("mutt_remediation_notifications_total", {"outcome": outcome}) or 0.0


def test_the_pagerduty_body_is_an_events_v2_trigger_with_the_routing_key(webhook):
    assert notify_poison(REPORT) == "sent"
    [request] = webhook.to("/notify", "POST")
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers, "PagerDuty takes the key in the body"
    assert request.json() == {
        "routing_key": TOKEN,
        "event_action": "trigger",
        "dedup_key": streams.dlq_stream("dead"),
        "payload": {
            "summary": "MUTT moved 3 DLQ entries to the dead queue after 5 replays (alerter: 1, moog: 2)",
            "source": socket.gethostname(),
            "severity": "error",
            "component": "mutt-remediation",
            "custom_details": {
                "count": 3,
                "queues": {"alerter": 1, "moog": 2},
                "sample_event_ids": ["ev-1", "ev-2", "ev-3"],
                "dead_queue": streams.dlq_stream("dead"),
                "max_poison_retries": 5,
            },
        },
    }


def test_the_json_format_sends_the_token_as_a_bearer_header(webhook):
    apply_setting("notify_webhook_format", "json")
    assert notify_poison(REPORT) == "sent"
    [request] = webhook.to("/notify", "POST")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = request.json()
    assert TOKEN not in request.body.decode()
    assert (body["event"], body["count"], body["queues"], body["sample_event_ids"]) == (
        "mutt.dlq.poison",
        3,
        {"alerter": 1, "moog": 2},
        ["ev-1", "ev-2", "ev-3"],
    )


def test_a_refused_notification_is_counted_and_logged_without_the_token(webhook, caplog):
    webhook.respond("/notify", 400, f'{{"status": "invalid event", "echo": "{TOKEN}"}}'.encode())
    before = sent("failed")
    with caplog.at_level(logging.DEBUG):
        assert notify_poison(REPORT) == "failed"
    assert sent("failed") == before + 1
    assert "refused with HTTP 400" in caplog.text
    logged = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert TOKEN not in logged


def test_an_unreachable_webhook_is_a_failure_not_an_exception(webhook, caplog):
    apply_setting("notify_webhook_url", f"{closed_port_url()}/notify?key={TOKEN}")
    with caplog.at_level(logging.DEBUG):
        assert notify_poison(REPORT) == "failed"
    assert TOKEN not in caplog.text + " ".join(str(vars(r)) for r in caplog.records)


def test_a_slow_webhook_times_out_as_a_failure(webhook, monkeypatch):
    monkeypatch.setattr(notify, "TIMEOUT", notify.urllib3.Timeout(connect=1.0, read=0.2))
    webhook.respond("/notify", 200, delay=1.0)
    assert notify_poison(REPORT) == "failed"


def test_without_a_url_nothing_is_sent(webhook):
    apply_setting("notify_webhook_url", "")
    before = sent("disabled")
    assert notify_poison(REPORT) == "disabled"
    assert sent("disabled") == before + 1
    assert webhook.requests == []


def test_pagerduty_without_a_token_is_not_sent(webhook, settings):
    settings.MUTT_SECRETS_ENV = {}
    reset_secrets()
    assert notify_poison(REPORT) == "no_token"
    assert webhook.requests == []
