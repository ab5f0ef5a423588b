"""Canonical events as ingest produces them, for tests that feed the ingest stream directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from mutt_project import streams


def make_event(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    event = {
        "event_id": str(uuid.uuid4()),
        "received_at": now,
        "timestamp": now,
        "timestamp_inferred": False,
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
