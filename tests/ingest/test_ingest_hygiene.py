"""Input hygiene from ingest to the audit log: what ingest accepts, the alerter can store, exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core import contracts, streams
from ingest import fields
from ingest.schema import Receipt, encode, normalise
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.ingest.helpers import post, stream_events


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
    queued = [json.loads(fields[contracts.PAYLOAD_FIELD]) for _, fields in redis_client.xrange(streams.ingest_stream())]
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


# --- hostnames (ADR-006) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "error"),
    [
        ("İ" * 128, "HOSTNAME_ERROR"),  # 128 characters that lower-case to 256
        ("core rtr", "HOSTNAME_SPACE_ERROR"),
        ("core-rtr\r\nX-Injected: 1", "HOSTNAME_SPACE_ERROR"),
        ("core\trtr", "HOSTNAME_SPACE_ERROR"),
        ("core-rtr\x07", "HOSTNAME_SPACE_ERROR"),
        ("core\u2028rtr", "HOSTNAME_SPACE_ERROR"),
        ("core\u00a0rtr", "HOSTNAME_SPACE_ERROR"),
        ("lab/rtr", "HOSTNAME_ERROR"),
        ("a..b", "HOSTNAME_ERROR"),
        ("x" * 64 + ".example", "HOSTNAME_ERROR"),
        (("a" * 63 + ".") * 4, "HOSTNAME_LENGTH_ERROR"),
        ("fe80::1%eth0", "HOSTNAME_ERROR"),
        ("300.1.1.1", "must be a valid IPv4 address when it is four dotted numbers"),
    ],
)
def test_a_hostname_that_is_no_host_name_is_422_naming_the_field(client, ingest_key, redis_client, hostname, error):
    response = post(client, {"hostname": hostname, "message": "m"}, key=ingest_key)
    assert response.status_code == 422
    message = getattr(fields, error) if error.isupper() else error  # the constants' names, or the text
    assert response.json()["errors"] == [{"index": 0, "errors": {"hostname": message}}]
    assert redis_client.xlen(streams.ingest_stream()) == 0


@pytest.mark.parametrize(
    ("hostname", "canonical"),
    [
        (" Core-RTR-01.Example.NET. ", "core-rtr-01.example.net"),
        ("lab_rtr_01", "lab_rtr_01"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("\uff32\uff34\uff32\uff11.example", "rtr1.example"),  # full-width letters map to ASCII (UTS 46)
        ("192.0.2.1", "192.0.2.1"),
        ("[2001:DB8::0:1]", "2001:db8::1"),
        ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        (
            "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
            "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
        ),
    ],
)
def test_hostnames_are_kept_in_their_canonical_form(hostname, canonical):
    assert fields.hostname(hostname) == canonical
    assert len(canonical) <= fields.HOSTNAME_MAX


# --- every accepted event fits the audit table --------------------------------------------------

_EDGE_TEXT = st.text(
    alphabet=st.sampled_from(
        "\u0130\u0131\u00df\u1e9e\ufb01\u01c5\u03a3\u03c3\u03c2\u212b\u00c5\u0307\u200b\u00ad\u2028"
        "\x00\x1f\x7f\x85\uff21\uff41Zz09-_.:[]%/\\ \t\r\n"
    )
)
_TEXT = st.one_of(
    st.text(), _EDGE_TEXT, st.text(max_size=400), st.text(alphabet="\u0130a.", min_size=100, max_size=300)
)
_LABEL = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=70)
_HOSTNAMES = st.one_of(
    _TEXT,
    st.from_regex(r"[A-Za-z0-9_.-]{1,300}", fullmatch=True),
    st.lists(_LABEL, min_size=1, max_size=6).map(".".join),
    st.ip_addresses().map(str),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
# Optional fields mostly valid (any invalid one rejects the item), with extreme values where the
# database has a limit; the free text (message, source type, extra, variables) anything at all.
_ITEMS = st.fixed_dictionaries(
    {"hostname": _HOSTNAMES, "message": _TEXT},
    optional={
        "timestamp": st.one_of(
            st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
            st.integers(-(10**12), 10**14),
        ),
        "syslog_severity": st.sampled_from([0, 7, "warning", "EMERG", None]),
        "facility": st.sampled_from([0, 23, "local7", None]),
        "trap_oid": st.from_regex(r"\.?[0-9]{1,10}(\.[0-9]{1,10}){0,60}", fullmatch=True),
        "source_type": _TEXT,
        "source_ip": st.ip_addresses().map(str),
        "variables": _JSON,
        "site": _JSON,
        "": _JSON,
    },
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_every_event_ingest_accepts_is_audited_fuzzed(redis_client, clean_pipeline):
    """Generated items through the real normalise and encode; every accepted one through the real
    alerter into the real audit table: none may be refused there (the DLQ stays empty)."""
    receipt = Receipt(datetime.now(UTC), correlation_id="fuzz-" + "r" * 200, ingested_by="fuzz")
    accepted: dict[str, bytes] = {}

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(_ITEMS)
    @example({"hostname": "İ" * 128, "message": "m"})
    @example({"hostname": "İ" * 100 + "." + "İ" * 20, "message": "m"})
    @example({"hostname": "a\tb", "message": "m", "source_type": "İ" * 50})
    def collect(item):
        event, _ = normalise(item, receipt)
        if event is not None:
            payload, _ = encode(event, item)
            if payload is not None:
                accepted[event["event_id"]] = payload

    collect()
    assert len(accepted) > 50, "the generator should produce many acceptable events"
    pipe = redis_client.pipeline(transaction=False)
    for payload in accepted.values():
        pipe.xadd(streams.ingest_stream(), {contracts.PAYLOAD_FIELD: payload})
    pipe.execute()
    drain(Alerter("fuzz-1"), rounds=50)
    assert alerter_dlq(redis_client) == []
    audited = {str(event_id) for event_id in EventAuditLog.objects.values_list("event_id", flat=True)}
    assert audited == set(accepted)


# --- event times (issue 13, item 17) -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_event_time_past_the_bounds_is_kept_with_the_receive_time_in_this_months_partition(
    client, ingest_key, redis_client, clean_pipeline, runtime_settings
):
    call_command("run_job", "audit_partitions")  # as the scheduled job does: the alerter makes no partitions
    runtime_settings(max_clock_skew=3600, max_event_age=86400)
    soon = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    items = [
        {"hostname": "edge-001", "message": "far future", "timestamp": "9999-12-31T23:59:59Z"},
        {"hostname": "edge-002", "message": "long ago", "timestamp": "0001-01-01T00:00:00Z"},
        {
            "hostname": "edge-003",
            "message": "next month",
            "timestamp": (datetime.now(UTC) + timedelta(days=40)).isoformat(),
        },
        {
            "hostname": "edge-004",
            "message": "two days old",
            "timestamp": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
        },
        {"hostname": "edge-005", "message": "clock 30 min ahead", "timestamp": soon},
    ]
    response = post(client, items, key=ingest_key)
    assert response.status_code == 202
    assert response.json()["accepted"] == 5, "never refused, never dropped"
    queued = {event["message"]: event for event in stream_events(redis_client)}
    for message in ("far future", "long ago", "next month", "two days old"):
        event = queued[message]
        assert event["timestamp_corrected"] is True
        assert event["timestamp"] == event["received_at"]
    assert queued["far future"]["original_timestamp"] == "9999-12-31T23:59:59.000000+00:00"
    assert queued["long ago"]["original_timestamp"] == "0001-01-01T00:00:00.000000+00:00"
    kept = queued["clock 30 min ahead"]
    assert (kept["timestamp_corrected"], kept["original_timestamp"]) == (False, None)
    assert datetime.fromisoformat(kept["timestamp"]) == datetime.fromisoformat(soon)

    drain(Alerter("hygiene-time"))
    assert alerter_dlq(redis_client) == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT message, tableoid::regclass::text FROM rules_eventauditlog")
        partitions = dict(cursor.fetchall())
    assert len(partitions) == 5
    assert "rules_eventauditlog_default" not in partitions.values(), partitions
