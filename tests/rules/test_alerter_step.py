"""The alerter's step loop against real Redis and PostgreSQL: a batch end to end, a batch held through a
database outage, and the rule snapshot it matches against (loaded first, changed while it runs)."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from core import streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.alerting import drain, pending
from tests.support.events import make_event, push, read_stream
from tests.support.waiting import wait_for


@pytest.mark.django_db(transaction=True)
def test_matched_events_are_audited_alerted_and_acknowledged(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    events = [make_event(hostname=f"core-rtr-{i:02d}") for i in range(5)]
    push(redis_client, events)
    assert drain(alerter) == 5
    rows = {str(r.event_id): r for r in EventAuditLog.objects.all()}
    assert set(rows) == {e["event_id"] for e in events}
    row = rows[events[0]["event_id"]]
    assert (row.environment, row.rule_id, row.handling, row.team, row.forwarded, row.alert_severity) == (
        "prod", link_rule.pk, "page_and_ticket", "network-ops", True, "major",
    )  # fmt: skip
    assert row.raw["correlation_id"] == events[0]["correlation_id"]
    alerts = read_stream(redis_client, streams.alerts_stream())
    assert sorted(a["event_id"] for a in alerts) == sorted(e["event_id"] for e in events)
    alert = next(a for a in alerts if a["event_id"] == events[0]["event_id"])
    assert alert["signature"] == f"core-rtr-00:{link_rule.pk}::Gi0/1", "the default signature names the interface"
    assert (alert["rule_id"], alert["team"], alert["severity"], alert["handling"]) == (
        link_rule.pk, "network-ops", "major", "page_and_ticket",
    )  # fmt: skip
    assert alert["correlation_id"] == events[0]["correlation_id"]
    assert alert["event_time"] == events[0]["timestamp"]
    assert "ingested_by" not in alert
    assert pending(redis_client) == 0
    assert redis_client.xlen(streams.ingest_stream()) == 0, "acknowledged entries are trimmed"


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_loses_nothing(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    alerter.refresh_rules(force=True)
    events = [make_event() for _ in range(3)]
    push(redis_client, events)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        assert alerter.step(block_ms=10) == 0
        assert alerter._held is not None
        assert pending(redis_client) == 3, "nothing is acknowledged while the database is down"
        assert redis_client.xlen(streams.alerts_stream()) == 0
        alerter._held.retry_at = 0
        assert alerter.step(block_ms=10) == 0, "still down: kept again"
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    alerter._held.retry_at = 0
    assert alerter.step(block_ms=10) == 3
    assert EventAuditLog.objects.count() == 3
    assert len(read_stream(redis_client, streams.alerts_stream())) == 3
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_a_rule_edited_in_the_admin_applies_in_a_running_alerter_within_a_second(
    redis_client, clean_pipeline, link_rule, admin_client_alice
):
    alerter = Alerter("a1")
    alerter.start_rule_listener()
    try:
        alerter.refresh_rules(force=True)
        assert wait_for(lambda: (alerter.step(block_ms=10), not alerter.rules_changed.is_set())[1], timeout=3)
        form = {
            "name": "link down", "description": "", "is_active": "on", "priority": "10", "match_type": "contains",
            "match_string": "changed state to down", "trap_oid": "", "syslog_severity": "",
            "prod_handling": "ticket_only", "dev_handling": "ignore", "team_assignment": "noc", "severity": "minor",
            "change_reason": "tickets only",
        }  # fmt: skip
        response = admin_client_alice.post(f"/admin/rules/alertrule/{link_rule.pk}/change/", form)
        assert response.status_code == 302
        changed_at = time.monotonic()
        assert wait_for(
            lambda: (alerter.step(block_ms=10), alerter.ruleset.match("x", "changed state to down").team == "noc")[1],
            timeout=1.0,
        )
        assert time.monotonic() - changed_at < 1.0
    finally:
        alerter.stop()


@pytest.mark.django_db(transaction=True)
def test_nothing_is_matched_before_the_rules_have_loaded(redis_client, clean_pipeline, link_rule):
    push(redis_client, [make_event()])
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        alerter = Alerter("a1")
        assert alerter.step(block_ms=10) == 0
        assert not alerter.rules_loaded
        assert redis_client.xlen(streams.ingest_stream()) == 1
        assert pending(redis_client) == 0, "not even read while the rules are unknown"
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    drain(alerter)
    assert EventAuditLog.objects.get().handling == "page_and_ticket", "matched against the real rules"
