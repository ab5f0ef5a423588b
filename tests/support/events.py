"""Canonical events as ingest produces them, for tests that feed the ingest stream directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from core import streams
from core.ids import uuid7
from ingest.fields import isoformat


def make_event(**overrides: Any) -> dict[str, Any]:
    """An event with every key of ``core.contracts.CanonicalEvent``, formatted as ingest formats it (a UUID
    v7 id, times in UTC with microseconds), then ``overrides``."""
    now = isoformat(datetime.now(UTC))
    event = {
        "event_id": uuid7(),
        "received_at": now,
        "timestamp": now,
        "timestamp_inferred": False,
        "timestamp_corrected": False,
        "original_timestamp": None,
        "hostname": "core-rtr-01",
        "message": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "syslog_severity": 3,
        "trap_oid": None,
        "source_type": "syslog",
        "source_ip": "192.0.2.10",
        "facility": None,
        "variables": None,
        "extra": {},
        "correlation_id": uuid.uuid4().hex,
        "ingested_by": "test",
    }
    event.update(overrides)
    return event


def push(client: Any, events: list[dict[str, Any]]) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(streams.ingest_stream(), streams.encode(event))
    return pipe.execute()


def read_stream(client: Any, stream: str) -> list[dict[str, Any]]:
    return [streams.decode(fields) for _, fields in client.xrange(stream)]


def make_alert(**overrides: Any) -> dict[str, Any]:
    """An alert as the alerter queues it for the forwarder."""
    event_id = str(uuid.uuid4())
    alert = {
        "kind": "rule",
        "event_id": event_id,
        "correlation_id": uuid.uuid4().hex,
        "hostname": "core-rtr-01",
        "rule_id": 7,
        "team": "network-ops",
        "severity": "major",
        "handling": "page_and_ticket",
        "environment": "prod",
        "description": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "event_time": datetime.now(UTC).isoformat(),
        "trap_oid": "",
        "source_type": "syslog",
        "signature": "core-rtr-01:7:",
    }
    alert.update(overrides)
    return alert


def push_alerts(client: Any, alerts: list[dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for alert in alerts:
        pipe.xadd(streams.alerts_stream(), streams.encode(alert))
    pipe.execute()
