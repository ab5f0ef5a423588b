"""The admission entry point as a listener calls it: a sender and decoded items in, an outcome per item out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from core import streams
from core.redis import reset_clients
from ingest import ratelimit
from ingest.admission import Refusal, Sender, admit_events, admit_values
from ingest.schema import Receipt, normalise
from tests.ingest.helpers import event, stream_events

pytestmark = pytest.mark.django_db

SYSLOG = Sender.listener("syslog-udp", "192.0.2.10", correlation_id="datagram-1")


def counted(outcome: str) -> float:
    """``mutt_ingest_events_total`` of one outcome, in this process."""
    return REGISTRY.get_sample_value("mutt_ingest_events_total", {"outcome": outcome}) or 0.0


def syslog_item(n: int = 0, **fields) -> dict:
    """What a syslog listener would make of one datagram."""
    return event(
        n, source_type="syslog", source_ip="192.0.2.10", syslog_severity="warning", facility="local0", **fields
    )


def test_a_listener_admits_decoded_items_and_reads_each_outcome_off_the_stream(redis_client):
    items = [syslog_item(0), {"hostname": "edge-001"}, syslog_item(2, message="x" * 70_000), syslog_item(3)]

    result = admit_values(SYSLOG, items)

    outcomes = result.outcomes()
    assert [(o.index, o.refusal) for o in outcomes] == [
        (0, None),
        (1, Refusal.INVALID),
        (2, Refusal.TOO_LARGE),
        (3, None),
    ]
    assert outcomes[1].errors == {"message": "is required unless trap_oid is given"}
    assert outcomes[2].errors["item"].endswith("the limit is 65536 (ingest_max_event_bytes)")
    assert (outcomes[1].event_id, outcomes[2].event_id) == (None, None)
    queued = stream_events(redis_client)
    assert [e["event_id"] for e in queued] == [outcomes[0].event_id, outcomes[3].event_id]
    assert [e["hostname"] for e in queued] == ["edge-000", "edge-003"]
    first = queued[0]
    assert (first["ingested_by"], first["correlation_id"]) == ("syslog-udp", "datagram-1")
    assert (first["source_type"], first["source_ip"], first["syslog_severity"], first["facility"]) == (
        "syslog",
        "192.0.2.10",
        4,
        16,
    )
    assert result.accepted == 2
    assert result.backlog == 2


def test_events_already_in_canonical_form_are_queued_as_they_are(redis_client):
    receipt = Receipt(datetime.now(UTC), "trap-7", "snmp-trap")
    trap, errors = normalise({"hostname": "edge-009", "trap_oid": ".1.3.6.1.6.3.1.1.5.3"}, receipt)
    holding_nul, _ = normalise(event(1, message="bad \x00 byte"), receipt)
    assert trap is not None
    assert holding_nul is not None
    assert errors == {}

    result = admit_events(Sender.listener("snmp-trap", "192.0.2.20"), [trap, holding_nul])

    assert [(o.event_id, o.refusal, o.errors) for o in result.outcomes()] == [
        (trap["event_id"], None, {}),
        (None, Refusal.INVALID, {"message": "contains a NUL character"}),
    ]
    assert stream_events(redis_client) == [trap]


def test_a_listener_over_its_rate_has_every_valid_item_refused_and_other_addresses_go_on(
    redis_client, runtime_settings
):
    runtime_settings(ingest_key_max_rate=1)
    assert admit_values(SYSLOG, [syslog_item(0)]).accepted == 1
    limited, rejected = counted("rate_limited"), counted("rejected")

    refused = admit_values(SYSLOG, [syslog_item(1), {"hostname": ""}, syslog_item(2)])

    # Nothing a listener hands over vanishes uncounted: the refused valid items and the invalid one.
    assert (counted("rate_limited") - limited, counted("rejected") - rejected) == (2, 1)

    assert [o.refusal for o in refused.outcomes()] == [Refusal.RATE_LIMITED, Refusal.INVALID, Refusal.RATE_LIMITED]
    assert [o.event_id for o in refused.outcomes()] == [None, None, None]
    assert (refused.accepted, refused.limited_by, refused.retry_after) == (0, "key", 1)
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000"]
    # Each address a listener hears from has its own bucket, apart from the API keys'.
    assert redis_client.exists(ratelimit.key_bucket("listener:syslog-udp:192.0.2.10"))
    other = admit_values(Sender.listener("syslog-udp", "192.0.2.11"), [syslog_item(3)])
    assert [o.refusal for o in other.outcomes()] == [None]


def test_a_full_queue_refuses_every_valid_item_for_backpressure(redis_client, runtime_settings):
    runtime_settings(ingest_max_batch=1000, ingest_max_queue_depth=1000)
    pipe = redis_client.pipeline(transaction=False)
    for n in range(1000):
        pipe.xadd(streams.ingest_stream(), streams.encode({"filler": n}))
    pipe.execute()

    before = counted("backpressure")
    result = admit_values(SYSLOG, [syslog_item(0), syslog_item(1)])

    assert [o.refusal for o in result.outcomes()] == [Refusal.BACKPRESSURE, Refusal.BACKPRESSURE]
    assert counted("backpressure") - before == 2
    assert (result.backlog, result.retry_after) == (1000, ratelimit.BACKPRESSURE_RETRY_AFTER)
    assert redis_client.xlen(streams.ingest_stream()) == 1000
    assert not redis_client.exists(ratelimit.key_bucket(SYSLOG.rate_key)), "a refusal spends no tokens"


def test_without_redis_every_valid_item_is_refused_as_unavailable(settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    reset_clients()
    before = counted("unavailable")
    try:
        result = admit_values(SYSLOG, [syslog_item(0), []])
    finally:
        reset_clients()
    assert [o.refusal for o in result.outcomes()] == [Refusal.UNAVAILABLE, Refusal.INVALID]
    assert result.retry_after == 5
    assert counted("unavailable") - before == 1
