"""The events tests feed the ingest stream with (``tests.support.events.make_event``) look like what ingest
queues: the same keys as the canonical event, values of the same types and formats."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from core.contracts import CanonicalEvent
from ingest.schema import Receipt, normalise
from tests.support.events import make_event


def test_make_event_has_exactly_the_keys_of_the_canonical_event():
    assert set(make_event()) == set(CanonicalEvent.__annotations__)


def test_make_event_matches_an_event_ingest_made_key_by_key():
    receipt = Receipt(datetime.now(UTC), correlation_id="req-0001", ingested_by="test")
    item = {"hostname": "core-rtr-01", "message": "up", "syslog_severity": 3, "source_ip": "192.0.2.10"}
    made, errors = normalise(item, receipt)
    assert errors == {}
    assert made is not None
    ours = make_event()
    assert set(ours) == set(made)
    for name, value in made.items():
        assert type(ours[name]) is type(value), name
    # Same formats: a UUID v7 id, and times in UTC with microseconds (the text sorts; the audit parses it).
    assert uuid.UUID(ours["event_id"]).version == 7
    for name, mine, theirs in (
        ("timestamp", ours["timestamp"], made["timestamp"]),
        ("received_at", ours["received_at"], made["received_at"]),
    ):
        assert len(mine) == len(theirs), name
        assert mine.endswith("+00:00"), name
    assert (ours["timestamp_corrected"], ours["original_timestamp"]) == (False, None)
