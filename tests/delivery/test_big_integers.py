"""An accepted event holding an integer orjson refuses (over 308 digits; ingest keeps up to 4,300 exact) goes
the whole way: audited with every digit, alerted, delivered to Moogsoft, nothing in any dead-letter queue."""

from __future__ import annotations

import json

import pytest

from core import contracts, streams
from core.audit import Actor
from delivery.destinations.moogsoft import MOOGSOFT
from delivery.forwarder import Forwarder
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, EventAuditLog
from tests.delivery.support import deliver_all, recorded
from tests.ingest.helpers import post
from tests.support.waiting import apply_setting

# 400 digits: orjson refuses it as an infinite float; 2**64: orjson reads it as a float (1.8446744073709552e19).
BIGS = [7 * 10**399 + 12345, 2**64 + 1]


@pytest.fixture
def page_rule(clean_pipeline):
    return services.create(
        AlertRule, actor=Actor.cli("ops"), name="link down", match_type="contains",
        match_string="changed state to down", team_assignment="network-ops", severity="major",
    )  # fmt: skip


@pytest.mark.usefixtures("page_rule")
@pytest.mark.parametrize(
    "case",
    [(fmt, big) for fmt in ("webhook", "events_api") for big in BIGS],
    ids=[f"{fmt}-{name}" for fmt in ("webhook", "events_api") for name in ("400_digits", "2_to_the_64_plus_1")],
)
def test_an_integer_past_64_bits_is_audited_exactly_and_delivered(client, api_keys, redis_client, moog, case):
    fmt, big = case
    apply_setting("moog_format", fmt)
    body = json.dumps(
        [
            {"hostname": "edge-1", "message": "Gi0/1 changed state to down", "n": big, "variables": {"ifIndex": big}},
            {"hostname": "edge-2", "message": "Gi0/2 changed state to down"},
        ]
    )
    response = post(client, body, key=api_keys["ingest"])
    assert response.status_code == 202, response.json()
    big_id, plain_id = response.json()["event_ids"]

    alerter = Alerter("big-ints")
    while alerter.step(block_ms=10):
        pass
    rows = {str(row.event_id): row for row in EventAuditLog.objects.all()}
    assert set(rows) == {big_id, plain_id}, "both events audited"
    raw = rows[big_id].raw if isinstance(rows[big_id].raw, dict) else json.loads(rows[big_id].raw)
    assert (raw["extra"], raw["variables"]) == ({"n": big}, {"ifIndex": big}), "every digit kept"
    assert rows[big_id].handling == "page_and_ticket"

    forwarder = Forwarder("big-ints")
    try:
        deliver_all(forwarder)
    finally:
        forwarder.close()
    events = {(e.get("external_id") or e.get("tags", {}).get("event_id")): e for e in recorded(moog)}
    assert set(events) == {big_id, plain_id}, "both alerts delivered"
    sent = events[big_id]
    if fmt == "webhook":
        assert sent["custom_info"]["details"]["varbinds"] == {"ifIndex": big}, "every digit sent"
    else:
        assert sent["tags"]["varbind.ifIndex"] in (big, str(big)), "every digit sent (Cloud tags are text)"
    for name in contracts.DLQ_QUEUES:
        assert redis_client.xlen(streams.dlq_stream(name)) == 0, f"nothing in the {name} DLQ"
    assert redis_client.hlen(MOOGSOFT.inflight_key()) == 0
