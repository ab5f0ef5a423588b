"""Input hygiene from ingest to the audit log: what ingest accepts, the alerter can store, exactly."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from mutt_project import streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.ingest.helpers import post


def drain(alerter: Alerter, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not alerter.step(block_ms=10) and alerter.idle:
            return


def alerter_dlq(redis_client) -> list[dict]:
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        for _, fields in redis_client.xrange(streams.dlq_stream("alerter"))
    ]


BIG = {
    "u128": 2**128 + 1,
    "below_int64": -(2**63) - 1,
    "u64_max": 2**64 - 1,
    "u64_past": 2**64,
    "nested": {"list": [10**30, 1.5, -(10**40)], "small": 7},
    "digits_in_text": "12345678901234567890",
}


@pytest.mark.django_db(transaction=True)
def test_integers_past_64_bits_in_extra_stay_exact_from_ingest_to_the_audit_row(
    client, ingest_key, redis_client, clean_pipeline
):
    bodies = [
        ("application/json", json.dumps([{"hostname": "edge-001", "message": "m", **BIG}])),
        ("application/x-ndjson", json.dumps({"hostname": "edge-002", "message": "m", **BIG}) + "\n"),
        ("application/json", json.dumps({"hostname": "edge-003", "message": "m", **BIG})),
    ]
    event_ids = []
    for content_type, body in bodies:
        response = post(client, body, key=ingest_key, content_type=content_type)
        assert response.status_code == 202, response.json()
        event_ids += response.json()["event_ids"]

    # The stream entries carry the digits (read here with the standard library, which keeps them).
    queued = [json.loads(fields[streams.PAYLOAD_FIELD]) for _, fields in redis_client.xrange(streams.ingest_stream())]
    assert [event["extra"] for event in queued] == [BIG] * 3

    drain(Alerter("hygiene-1"))
    assert alerter_dlq(redis_client) == []
    rows = {str(row.event_id): row for row in EventAuditLog.objects.all()}
    assert sorted(rows) == sorted(event_ids)
    for row in rows.values():
        assert row.raw["extra"] == BIG
    with connection.cursor() as cursor:
        cursor.execute("SELECT raw->'extra'->>'u128', raw->'extra'->'nested'->'list'->>0 FROM rules_eventauditlog")
        assert set(cursor.fetchall()) == {(str(2**128 + 1), str(10**30))}
