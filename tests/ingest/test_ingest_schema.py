"""Normalisation of one incoming item into the canonical event, field by field."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from core.contracts import CanonicalEvent
from core.ids import uuid7
from ingest import fields, schema
from ingest.fields import FieldError
from ingest.schema import Receipt, normalise

RECEIVED = datetime(2026, 5, 1, 12, 0, 0, 654321, tzinfo=UTC)


def norm(item: object) -> tuple[CanonicalEvent | None, dict[str, str]]:
    return normalise(item, Receipt(RECEIVED, correlation_id="req-0001", ingested_by="rsyslog-dc1"))


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00.000000+00:00"),
        ("2026-05-01T10:00:00.123456+02:00", "2026-05-01T08:00:00.123456+00:00"),
        ("2026-05-01t10:00:00.5z", "2026-05-01T10:00:00.500000+00:00"),
        ("2026-05-01 10:00:00-05:30", "2026-05-01T15:30:00.000000+00:00"),
        ("2026-05-01T10:00:00", "2026-05-01T10:00:00.000000+00:00"),  # no zone: UTC
        ("2026-05-01", "2026-05-01T00:00:00.000000+00:00"),
        (1777629600, "2026-05-01T10:00:00.000000+00:00"),  # epoch seconds
        (1777629600.25, "2026-05-01T10:00:00.250000+00:00"),
        (1777629600123, "2026-05-01T10:00:00.123000+00:00"),  # epoch milliseconds
        ("1777629600", "2026-05-01T10:00:00.000000+00:00"),  # numeric strings
        ("1777629600123", "2026-05-01T10:00:00.123000+00:00"),
        (" 1777629600.5 ", "2026-05-01T10:00:00.500000+00:00"),
        (99_999_999_999, "5138-11-16T09:46:39.000000+00:00"),  # largest value read as seconds
        (100_000_000_000, "1973-03-03T09:46:40.000000+00:00"),  # smallest value read as milliseconds
        (0, "1970-01-01T00:00:00.000000+00:00"),
    ],
)
def test_timestamps_are_read_as_iso_or_epoch_and_written_as_utc_with_microseconds(raw, expected):
    assert fields.isoformat(fields.timestamp(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    ["yesterday", "", "   ", "May  1 10:00:00", "2026-13-01T00:00:00Z", "2026-05-01T25:00", True, None, [], {}, "12ab"],
)
def test_garbage_timestamps_are_refused_saying_what_is_accepted(raw):
    with pytest.raises(FieldError, match="RFC 3339 / ISO 8601 date-time, or epoch seconds or milliseconds"):
        fields.timestamp(raw)


@pytest.mark.parametrize("raw", [10**20, "99999999999999999999", -(10**17), 1e300])
def test_epochs_beyond_the_calendar_are_out_of_range(raw):
    with pytest.raises(FieldError, match="out of range"):
        fields.timestamp(raw)


@pytest.mark.parametrize("raw", ["1" * 5000, "-" + "1" * 5000, "1" * 5000 + ".5", "1" * 21])
def test_epoch_text_longer_than_20_digits_is_out_of_range_without_being_converted(raw):
    # int() refuses text over 4,300 digits with a plain ValueError; 21 digits is past the calendar anyway.
    with pytest.raises(FieldError, match="out of range"):
        fields.timestamp(raw)


def test_a_missing_timestamp_is_the_received_time_and_says_so():
    event, errors = norm({"hostname": "a", "message": "m"})
    assert errors == {}
    assert event["timestamp"] == event["received_at"] == "2026-05-01T12:00:00.654321+00:00"
    assert event["timestamp_inferred"] is True
    given, _ = norm({"hostname": "a", "message": "m", "timestamp": "2026-05-01T11:59:00Z"})
    assert given["timestamp_inferred"] is False


# --- severities, facilities, OIDs, addresses --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("emerg", 0), ("EMERGENCY", 0), ("panic", 0), ("alert", 1), ("crit", 2), ("Critical", 2),
        ("err", 3), ("error", 3), ("warn", 4), (" Warning ", 4), ("notice", 5), ("info", 6),
        ("informational", 6), ("debug", 7), (0, 0), (7, 7), ("3", 3), (4.0, 4),
    ],
)  # fmt: skip
def test_severities_are_numbers_0_to_7_or_names_in_any_case(raw, code):
    assert fields.syslog_severity(raw) == code


@pytest.mark.parametrize("raw", [8, -1, "8", "loud", 2.5, True, [], "", "٣", "007", "1" * 5000])
def test_other_severities_are_refused(raw):
    with pytest.raises(FieldError, match="must be 0-7 or a name such as 'warning'"):
        fields.syslog_severity(raw)


@pytest.mark.parametrize(("raw", "code"), [("kern", 0), ("LOCAL7", 23), ("authpriv", 10), (16, 16), ("23", 23)])
def test_facilities_are_numbers_0_to_23_or_names(raw, code):
    assert fields.facility(raw) == code


@pytest.mark.parametrize("raw", [24, "local8", "kernel", False, "016", "2" * 5000])
def test_other_facilities_are_refused(raw):
    with pytest.raises(FieldError, match="must be 0-23 or a name such as 'local0'"):
        fields.facility(raw)


def test_trap_oids_are_dotted_numbers_with_one_leading_dot_dropped():
    assert fields.trap_oid(".1.3.6.1.6.3.1.1.5.3") == "1.3.6.1.6.3.1.1.5.3"
    assert fields.trap_oid(" 1.3.6.1.4.1.9 ") == "1.3.6.1.4.1.9"
    for bad in ["..1.3", "1.3.", "1..3", "iso.3.6", "1.3.x", "", 1.3, "1." + "2." * 200 + "3"]:
        with pytest.raises(FieldError, match="dotted numeric OID"):
            fields.trap_oid(bad)


def test_source_ips_are_checked_and_written_canonically():
    assert fields.source_ip("192.0.2.10") == "192.0.2.10"
    assert fields.source_ip(" 2001:DB8:0:0::1 ") == "2001:db8::1"
    for bad in ["192.0.2.300", "host.example", "", 3232235777]:
        with pytest.raises(FieldError, match="IPv4 or IPv6"):
            fields.source_ip(bad)


def test_source_ips_longer_than_any_address_are_refused_without_being_remembered():
    # Parsed addresses are cached by text; a sender must not fill that cache with 64 KiB strings.
    cached = fields._canonical_ip.cache_info().currsize
    for n in range(3):
        with pytest.raises(FieldError, match="IPv4 or IPv6"):
            fields.source_ip(f"{n}" * 65)
    assert fields._canonical_ip.cache_info().currsize == cached
    longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    assert fields.source_ip(longest) == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


# --- whole items ------------------------------------------------------------------------------


def test_a_full_item_becomes_the_canonical_event_with_extras_kept():
    event, errors = norm(
        {
            "hostname": "  Core-RTR-01.Example.NET ",
            "message": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
            "timestamp": "2026-05-01T11:00:00+01:00",
            "syslog_severity": "err",
            "facility": "local7",
            "source_type": "syslog",
            "source_ip": "192.0.2.10",
            "site": "dc1",
            "tags": ["core"],
            "event_id": "client-chosen",  # not ours to take: kept as an extra
        }
    )
    assert errors == {}
    assert uuid.UUID(event.pop("event_id")).version == 7
    assert event == {
        "hostname": "core-rtr-01.example.net",
        "message": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "timestamp": "2026-05-01T10:00:00.000000+00:00",
        "timestamp_inferred": False,
        "timestamp_corrected": False,
        "original_timestamp": None,
        "syslog_severity": 3,
        "facility": 23,
        "trap_oid": None,
        "source_type": "syslog",
        "source_ip": "192.0.2.10",
        "variables": None,
        "extra": {"site": "dc1", "tags": ["core"], "event_id": "client-chosen"},
        "received_at": "2026-05-01T12:00:00.654321+00:00",
        "correlation_id": "req-0001",
        "ingested_by": "rsyslog-dc1",
    }
    assert set(event) | {"event_id"} == set(CanonicalEvent.__annotations__)


def test_a_trap_needs_no_message_and_keeps_its_varbinds():
    event, errors = norm(
        {"hostname": "sw1", "trap_oid": ".1.3.6.1.6.3.1.1.5.3", "variables": {"ifIndex": 3}, "source_type": "snmp_trap"}
    )
    assert errors == {}
    assert (event["message"], event["trap_oid"], event["variables"]) == ("", "1.3.6.1.6.3.1.1.5.3", {"ifIndex": 3})
    assert event["source_type"] == "snmp_trap"


def test_every_problem_of_an_item_is_named_by_field():
    event, errors = norm(
        {
            "hostname": 42,
            "message": {"text": "x"},
            "timestamp": "soon",
            "syslog_severity": 9,
            "facility": "nowhere",
            "trap_oid": "abc",
            "source_type": "",
            "source_ip": "300.1.1.1",
            "variables": "ifIndex=3",
        }
    )
    assert event is None
    assert errors == {
        "hostname": "must be a string",
        "message": "must be a string",
        "timestamp": "must be an RFC 3339 / ISO 8601 date-time, or epoch seconds or milliseconds",
        "syslog_severity": "must be 0-7 or a name such as 'warning'",
        "facility": "must be 0-23 or a name such as 'local0'",
        "trap_oid": "must be a dotted numeric OID such as 1.3.6.1.6.3.1.1.5.3",
        "source_type": "must not be empty",
        "source_ip": "must be an IPv4 or IPv6 address",
        "variables": "must be an object or an array",
    }


@pytest.mark.parametrize(
    ("item", "errors"),
    [
        ({}, {"hostname": "is required", "message": "is required unless trap_oid is given"}),
        ({"hostname": "   ", "message": "m"}, {"hostname": "must not be empty"}),
        ({"hostname": ("h" * 60 + ".") * 5, "message": "m"}, {"hostname": fields.HOSTNAME_LENGTH_ERROR}),
        ({"hostname": "h", "message": 12}, {"message": "must be a string"}),
        ({"hostname": "h", "message": None}, {"message": "is required unless trap_oid is given"}),
        ({"hostname": "h", "trap_oid": "abc"}, {"trap_oid": fields.OID_ERROR}),  # with no message to fall back on
        ({"hostname": "h", "message": "m", "source_type": "s" * 51}, {"source_type": "must be at most 50 characters"}),
        ([1, 2], {"item": "must be a JSON object"}),
        ("hello", {"item": "must be a JSON object"}),
        (None, {"item": "must be a JSON object"}),
    ],
)
def test_missing_or_mistyped_required_fields_are_refused(item, errors):
    assert norm(item) == (None, errors)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timestamp", "1" * 5000, "is out of range"),
        ("syslog_severity", "1" * 5000, "must be 0-7 or a name such as 'warning'"),
        ("facility", "1" * 5000, "must be 0-23 or a name such as 'local0'"),
    ],
)
def test_long_digit_strings_are_field_errors_not_crashes(field, value, message):
    assert norm({"hostname": "h", "message": "m", field: value}) == (None, {field: message})


def test_a_parser_failing_with_a_plain_value_error_rejects_only_that_field(monkeypatch):
    def broken(value: object) -> int:
        raise ValueError("a limit nobody foresaw")

    monkeypatch.setitem(schema._OPTIONAL, "facility", broken)
    monkeypatch.setattr(fields, "timestamp", broken)
    event, errors = norm({"hostname": "h", "message": "m", "facility": 3, "timestamp": 1})
    assert event is None
    assert errors == {"facility": "is not a valid value", "timestamp": "is not a valid value"}


def test_received_at_is_formatted_once_per_request_not_per_event(monkeypatch):
    calls: list[datetime] = []
    original = fields.isoformat

    def counting(moment: datetime) -> str:
        calls.append(moment)
        return original(moment)

    monkeypatch.setattr(fields, "isoformat", counting)
    receipt = Receipt(RECEIVED, correlation_id="req-0001", ingested_by="rsyslog-dc1")
    events = [normalise({"hostname": "h", "message": str(n)}, receipt)[0] for n in range(3)]
    assert calls == [RECEIVED]
    assert {(e["timestamp"], e["received_at"]) for e in events} == {(receipt.received_at_text,) * 2}


def test_null_optional_fields_count_as_absent():
    event, errors = norm({"hostname": "h", "message": "m", "syslog_severity": None, "source_type": None})
    assert errors == {}
    assert (event["syslog_severity"], event["source_type"]) == (None, "webhook")


# --- event ids --------------------------------------------------------------------------------


def test_event_ids_are_uuid7_unique_and_time_ordered_across_threads():
    made: list[list[str]] = []

    def make() -> None:
        made.append([uuid7() for _ in range(5000)])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for batch in made for i in batch]
    assert len(set(every)) == len(every) == 20_000
    for batch in made:
        assert batch == sorted(batch), "each thread sees increasing ids"
    parsed = uuid.UUID(every[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert abs((parsed.int >> 80) - now_ms) < 5_000


def test_event_ids_made_one_after_another_sort_in_order():
    ids = [uuid7() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


# --- event times outside max_event_age / max_clock_skew (issue 13, item 17) --------------------


@pytest.mark.parametrize(
    ("sent", "kept", "original"),
    [
        ("2026-05-01T12:04:00Z", "2026-05-01T12:04:00.000000+00:00", None),  # within the skew
        ("2026-04-24T12:00:01Z", "2026-04-24T12:00:01.000000+00:00", None),  # within the age
        ("2026-05-01T12:06:00Z", "2026-05-01T12:00:00.654321+00:00", "2026-05-01T12:06:00.000000+00:00"),
        ("9999-12-31T23:59:59Z", "2026-05-01T12:00:00.654321+00:00", "9999-12-31T23:59:59.000000+00:00"),
        ("0001-01-01T00:00:00Z", "2026-05-01T12:00:00.654321+00:00", "0001-01-01T00:00:00.000000+00:00"),
        (0, "2026-05-01T12:00:00.654321+00:00", "1970-01-01T00:00:00.000000+00:00"),
    ],
)
def test_an_event_time_out_of_bounds_is_kept_as_the_receive_time_and_marked(sent, kept, original):
    receipt = Receipt(RECEIVED, "req-0001", "rsyslog-dc1", max_event_age=7 * 86400, max_clock_skew=300)
    event, errors = normalise({"hostname": "h", "message": "m", "timestamp": sent}, receipt)
    assert errors == {}
    assert (event["timestamp"], event["timestamp_corrected"], event["original_timestamp"]) == (
        kept, original is not None, original,
    )  # fmt: skip
    assert event["timestamp_inferred"] is False
