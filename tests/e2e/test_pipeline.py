"""Ingest → alerter → audit log and alert stream, for every body shape ingest accepts."""

from __future__ import annotations

import orjson
import pytest

from core import streams
from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, EventAuditLog
from tests.ingest.helpers import post

LINK_DOWN = "%LINK-3-UPDOWN: Interface Gi0/{n}, changed state to down"


@pytest.fixture
def page_rule(clean_pipeline):
    return services.create(
        AlertRule, actor=Actor.cli("ops"), name="link down", match_type="contains",
        match_string="changed state to down", team_assignment="network-ops", severity="major",
    )  # fmt: skip


def run_alerter() -> None:
    alerter = Alerter("e2e")
    while alerter.step(block_ms=10):
        pass


def alert_ids(redis_client) -> list[str]:
    return [streams.decode(fields)["event_id"] for _, fields in redis_client.xrange(streams.alerts_stream())]


@pytest.mark.parametrize("shape", ["object", "array", "ndjson"])
def test_accepted_events_are_audited_and_alerted_once(client, api_keys, redis_client, page_rule, shape):
    items = [{"hostname": f"Edge-{n}", "message": LINK_DOWN.format(n=n), "syslog_severity": "error"} for n in range(3)]
    if shape == "object":
        items = items[:1]
        response = post(client, items[0], key=api_keys["ingest"])
    elif shape == "array":
        response = post(client, items, key=api_keys["ingest"])
    else:
        body = b"\n".join(orjson.dumps(item) for item in items)
        response = post(client, body, key=api_keys["ingest"], content_type="application/x-ndjson")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == len(items)
    run_alerter()
    rows = {str(r.event_id): r for r in EventAuditLog.objects.all()}
    assert set(rows) == set(body["event_ids"])
    for row in rows.values():
        assert (row.handling, row.team, row.alert_severity, row.syslog_severity) == ("page_and_ticket", "network-ops",
                                                                                    "major", 3)  # fmt: skip
        assert row.hostname.startswith("edge-")
        assert row.correlation_id == body["correlation_id"]
    assert sorted(alert_ids(redis_client)) == sorted(body["event_ids"])


def test_a_partial_batch_audits_only_the_valid_items(client, api_keys, redis_client, page_rule):
    items = [
        {"hostname": "edge-1", "message": LINK_DOWN.format(n=1)},
        {"message": "no host"},
        {"hostname": "edge-3", "message": "quiet", "syslog_severity": 9},
        {"hostname": "edge-4", "message": "nothing matches this"},
    ]
    response = post(client, items, key=api_keys["ingest"])
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert "hostname" in body["errors"][0]["errors"]
    assert "syslog_severity" in body["errors"][1]["errors"]
    run_alerter()
    handling = dict(EventAuditLog.objects.values_list("hostname", "handling"))
    assert handling == {"edge-1": "page_and_ticket", "edge-4": "unhandled"}
    assert len(alert_ids(redis_client)) == 1
