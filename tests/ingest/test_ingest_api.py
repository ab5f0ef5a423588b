"""POST /api/v2/ingest: bodies, the response contract, authentication and versions."""

from __future__ import annotations

import io
import json
import uuid

import orjson
import pytest
from prometheus_client import REGISTRY

from configcenter import services as key_services
from configcenter.models import ApiKey
from core import contracts, exactjson, streams
from core.audit import Actor
from ingest import fields, schema
from ingest.auth import key_cache
from ingest.body import BodyRefused, read_body
from tests.ingest.helpers import event, post, stream_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db


# --- bodies -----------------------------------------------------------------------------------


def test_one_object_is_accepted_normalised_and_queued(client, ingest_key, redis_client):
    response = post(
        client,
        {"hostname": " Core-RTR-01 ", "message": "BGP down", "syslog_severity": "crit", "site": "dc1"},
        key=ingest_key,
        HTTP_X_REQUEST_ID="lb-req-000042",
    )
    assert response.status_code == 202
    body = response.json()
    assert body == {
        "accepted": 1,
        "rejected": 0,
        "event_ids": body["event_ids"],
        "correlation_id": "lb-req-000042",
        "errors": [],
    }
    assert response["X-Correlation-ID"] == response["X-Request-ID"] == "lb-req-000042"
    assert response["X-API-Version"] == "v2"
    assert "Deprecation" not in response
    [queued] = stream_events(redis_client)
    assert queued["event_id"] == body["event_ids"][0]
    assert uuid.UUID(queued["event_id"]).version == 7
    assert (queued["hostname"], queued["message"], queued["syslog_severity"]) == ("core-rtr-01", "BGP down", 2)
    assert queued["extra"] == {"site": "dc1"}
    assert queued["correlation_id"] == "lb-req-000042"
    assert queued["ingested_by"] == "ingest-key"
    assert queued["source_type"] == "webhook"
    assert queued["timestamp_inferred"] is True
    assert queued["timestamp"] == queued["received_at"]


def test_an_array_is_queued_in_order(client, ingest_key, redis_client):
    response = post(client, [event(n) for n in range(3)], key=ingest_key)
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 0)
    queued = stream_events(redis_client)
    assert [e["hostname"] for e in queued] == ["edge-000", "edge-001", "edge-002"]
    assert [e["event_id"] for e in queued] == body["event_ids"] == sorted(body["event_ids"])


def test_ndjson_is_one_object_per_line_blank_lines_ignored(client, ingest_key, redis_client):
    lines = b'{"hostname": "a", "message": "one"}\r\n\n  \n{"hostname": "b", "message": "two"}\n'
    response = post(client, lines, key=ingest_key, content_type="application/x-ndjson; charset=utf-8")
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    assert [(e["hostname"], e["message"]) for e in stream_events(redis_client)] == [("a", "one"), ("b", "two")]


def test_a_partial_batch_queues_the_good_items_and_names_the_bad_ones(client, ingest_key, redis_client):
    items = [
        event(0),
        {"hostname": "sw1", "message": "x", "syslog_severity": "loud"},
        "not an object",
        {"message": "no host", "source_ip": "10.0.0.999"},
        event(4),
    ]
    response = post(client, items, key=ingest_key)
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert body["errors"] == [
        {"index": 1, "errors": {"syslog_severity": "must be 0-7 or a name such as 'warning'"}},
        {"index": 2, "errors": {"item": "must be a JSON object"}},
        {"index": 3, "errors": {"hostname": "is required", "source_ip": "must be an IPv4 or IPv6 address"}},
    ]
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000", "edge-004"]
    assert [e["event_id"] for e in stream_events(redis_client)] == body["event_ids"]


def test_ndjson_item_errors_also_name_the_line(client, ingest_key):
    lines = b'{"hostname": "a", "message": "ok"}\n\n{"hostname": "b", "message": 5}\n'
    response = post(client, lines, key=ingest_key, content_type="application/x-ndjson")
    assert response.status_code == 202
    assert response.json()["errors"] == [{"index": 1, "line": 3, "errors": {"message": "must be a string"}}]


def test_long_digit_strings_reject_their_item_and_the_rest_is_accepted(client, ingest_key, redis_client):
    items = [event(0), event(1, timestamp="1" * 5000), event(2, syslog_severity="1" * 5000), event(3)]
    response = post(client, items, key=ingest_key)
    assert response.status_code == 202
    assert response.json()["errors"] == [
        {"index": 1, "errors": {"timestamp": "is out of range"}},
        {"index": 2, "errors": {"syslog_severity": "must be 0-7 or a name such as 'warning'"}},
    ]
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000", "edge-003"]


@pytest.mark.parametrize(
    ("item", "errors"),
    [
        (event(1, message="link\x00down"), {"message": "contains a NUL character"}),
        (
            {"hostname": "edge\x00001", "message": "m"},
            {"hostname": fields.HOSTNAME_SPACE_ERROR},
        ),  # a control character (ADR-006)
        (event(1, source_type="sys\x00log"), {"source_type": "contains a NUL character"}),
        (event(1, site="dc\x001"), {"site": "contains a NUL character"}),
        (event(1, tags=["core", ["deep\x00"]]), {"tags": "contains a NUL character"}),
        (event(1, variables={"ifDescr": {"Gi0/1\x00": 3}}), {"variables": "contains a NUL character"}),
        (event(1, **{"si\x00te": "dc1"}), {"item": "has a field name containing a NUL character"}),
    ],
)
def test_an_item_with_a_nul_character_anywhere_is_rejected_by_index(client, ingest_key, redis_client, item, errors):
    # PostgreSQL text and jsonb cannot store U+0000: accepting it would poison the alerter's batch insert.
    response = post(client, [event(0), item, event(2)], key=ingest_key)
    assert response.status_code == 202
    assert response.json()["errors"] == [{"index": 1, "errors": errors}]
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000", "edge-002"]


def test_a_nul_escape_in_ndjson_is_rejected_and_the_text_backslash_u0000_is_not(client, ingest_key, redis_client):
    lines = b'{"hostname": "a", "message": "x\\u0000y"}\n{"hostname": "b", "message": "C:\\\\u0000"}\n'
    response = post(client, lines, key=ingest_key, content_type="application/x-ndjson")
    assert response.status_code == 202
    assert response.json()["errors"] == [{"index": 0, "line": 1, "errors": {"message": "contains a NUL character"}}]
    assert [e["message"] for e in stream_events(redis_client)] == ["C:\\u0000"]


def test_an_item_nested_deeper_than_can_be_stored_is_rejected_by_index(client, ingest_key, redis_client):
    # orjson reads 1024 levels of nesting but writes fewer than 255 (so this body is written by hand).
    deep = b'{"hostname": "edge-001", "message": "m", "variables": ' + b"[" * 300 + b"]" * 300 + b"}"
    big = orjson.dumps(event(0, message="x" * 70_000))  # over ingest_max_event_bytes: every item is measured
    for items in ([orjson.dumps(event(0)), deep], [big, deep, orjson.dumps(event(2))]):
        response = post(client, b"[" + b",".join(items) + b"]", key=ingest_key)
        assert response.status_code == 202
        assert response.json()["errors"][-1] == {
            "index": 1,
            "errors": {"item": "is nested too deeply to be stored; keep objects and arrays under 250 levels"},
        }
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000", "edge-002"]


def test_a_batch_where_nothing_is_valid_is_422_with_the_same_shape(client, ingest_key, redis_client):
    response = post(client, [{"hostname": "a"}, 7], key=ingest_key, HTTP_X_REQUEST_ID="req-all-bad-01")
    assert response.status_code == 422
    assert response.json() == {
        "detail": "No event was accepted; see errors by index.",
        "accepted": 0,
        "rejected": 2,
        "event_ids": [],
        "correlation_id": "req-all-bad-01",
        "errors": [
            {"index": 0, "errors": {"message": "is required unless trap_oid is given"}},
            {"index": 1, "errors": {"item": "must be a JSON object"}},
        ],
    }
    assert redis_client.xlen(streams.ingest_stream()) == 0


def test_a_body_larger_than_djangos_upload_limit_is_still_accepted(client, ingest_key, redis_client, settings):
    # Ingest reads the body itself, bounded by its own limits, not DATA_UPLOAD_MAX_MEMORY_SIZE.
    count = 3000
    lines = b"\n".join(orjson.dumps(event(n, message="x" * 900)) for n in range(count))
    assert len(lines) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = post(client, lines, key=ingest_key, content_type="application/x-ndjson")
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == count
    assert redis_client.xlen(streams.ingest_stream()) == count


# --- refusals of the whole request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"", "application/json",
         "The body is empty; send a JSON object, an array of objects, or NDJSON (one per line)."),
        (b"  \n ", "application/x-ndjson",
         "The body is empty; send a JSON object, an array of objects, or NDJSON (one per line)."),
        (b"[]", "application/json", "The batch is empty; send at least one event."),
        (b'{"hostname": "a",', "application/json",
         "Malformed JSON: unexpected end of data: line 1 column 18 (char 17)."),
        (b'"just text"', "application/json", "The body is a JSON string; send an object or an array of objects."),
        (b"42", "application/json", "The body is a JSON number; send an object or an array of objects."),
    ],
)  # fmt: skip
def test_empty_or_malformed_bodies_are_400(client, ingest_key, body, content_type, detail):
    response = post(client, body, key=ingest_key, content_type=content_type)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


def test_malformed_ndjson_is_400_naming_the_line(client, ingest_key, redis_client):
    lines = b'{"hostname": "a", "message": "ok"}\n\n{"hostname": "b", "message": "broken}\n{}\n'
    response = post(client, lines, key=ingest_key, content_type="application/x-ndjson")
    assert response.status_code == 400
    body = response.json()
    assert body["line"] == 3
    assert body["detail"].startswith("Malformed NDJSON on line 3: ")
    assert redis_client.xlen(streams.ingest_stream()) == 0, "nothing of a malformed body is queued"


@pytest.mark.parametrize(
    ("content_type", "extra", "detail"),
    [
        ("text/html", {},
         "Unsupported Content-Type text/html; send application/json, or NDJSON as application/x-ndjson or text/plain."),
        ("application/x-www-form-urlencoded", {},
         "Unsupported Content-Type application/x-www-form-urlencoded; send application/json, or NDJSON as "
         "application/x-ndjson or text/plain."),
        ("application/json", {"HTTP_CONTENT_ENCODING": "br"},
         "Unsupported Content-Encoding br; send the body uncompressed or as gzip."),
    ],
)  # fmt: skip
def test_unsupported_content_types_are_415(client, ingest_key, content_type, extra, detail):
    response = post(client, [event()], key=ingest_key, content_type=content_type, **extra)
    assert response.status_code == 415
    assert response.json() == {"detail": detail}


def test_a_declared_content_length_over_the_limit_is_413_before_reading(client, ingest_key, runtime_settings):
    runtime_settings(ingest_max_event_bytes=256, ingest_max_batch=4)
    response = post(client, [event()], key=ingest_key, CONTENT_LENGTH="1025")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body of 1025 bytes exceeds the limit of 1024 bytes "
        "(ingest_max_event_bytes * ingest_max_batch); send smaller batches.",
        "limit_bytes": 1024,
    }


def test_ingest_max_body_bytes_bounds_the_body_when_it_is_the_smaller_limit(client, ingest_key, runtime_settings):
    runtime_settings(ingest_max_body_bytes=2048)
    response = post(client, [event()], key=ingest_key, CONTENT_LENGTH="2049")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body of 2049 bytes exceeds the limit of 2048 bytes "
        "(ingest_max_body_bytes); send smaller batches.",
        "limit_bytes": 2048,
    }
    lines = b"\n".join(orjson.dumps(event(n)) for n in range(40))
    assert 1024 < len(lines) <= 2048
    assert post(client, lines, key=ingest_key, content_type="application/x-ndjson").status_code == 202


def test_by_default_a_body_may_be_16_mib_not_event_bytes_times_batch(client, ingest_key):
    response = post(client, [event()], key=ingest_key, CONTENT_LENGTH=str(16 * 2**20 + 1))
    assert response.status_code == 413
    assert response.json()["limit_bytes"] == 16 * 2**20


def test_without_content_length_the_bytes_read_decide_and_reading_stops_past_the_limit():
    # Under WSGI the server cuts the body at Content-Length; ASGI or a missing header leaves the count.
    stream = io.BytesIO(b"x" * 5000)
    with pytest.raises(BodyRefused) as refused:
        read_body(stream.read, None, 1024, named_by="ingest_max_body_bytes")
    assert (refused.value.status, refused.value.reason) == (413, "body_too_large")
    assert refused.value.body["detail"] == (
        "The request body exceeds the limit of 1024 bytes (ingest_max_body_bytes); send smaller batches."
    )
    assert stream.tell() == 1025
    assert read_body(io.BytesIO(b"x" * 1024).read, None, 1024, named_by="ingest_max_body_bytes") == b"x" * 1024


def test_a_body_shorter_than_its_content_length_is_400_not_a_partial_batch():
    # The client went away mid-body: what arrived may be whole NDJSON lines, but it is not the batch sent.
    arrived = b'{"hostname": "a", "message": "one"}\n{"hostname": "b", "message": "two"}\n'
    with pytest.raises(BodyRefused) as refused:
        read_body(io.BytesIO(arrived).read, "4096", 65_536, named_by="ingest_max_body_bytes")
    assert (refused.value.status, refused.value.reason) == (400, "incomplete")
    assert refused.value.body == {
        "detail": f"The body is shorter than its Content-Length: {len(arrived)} of 4096 bytes arrived; "
        "nothing was accepted. Send the whole batch again."
    }
    assert read_body(io.BytesIO(arrived).read, str(len(arrived)), 65_536, named_by="x") == arrived


def test_more_items_than_ingest_max_batch_is_413(client, ingest_key, runtime_settings, redis_client):
    runtime_settings(ingest_max_batch=2)
    for body, content_type in [
        (orjson.dumps([event(n) for n in range(3)]), "application/json"),
        (b"\n".join(orjson.dumps(event(n)) for n in range(3)), "application/x-ndjson"),
    ]:
        response = post(client, body, key=ingest_key, content_type=content_type)
        assert response.status_code == 413
        assert response.json() == {
            "detail": "The batch has 3 events; the limit is 2 (ingest_max_batch). Send smaller batches.",
            "max_batch": 2,
            "received": 3,
        }
    assert redis_client.xlen(streams.ingest_stream()) == 0


def test_an_oversized_item_is_rejected_by_index_and_the_rest_accepted(client, ingest_key, runtime_settings):
    runtime_settings(ingest_max_event_bytes=256)
    big = event(1, message="x" * 300)
    response = post(client, [event(0), big], key=ingest_key)
    assert response.status_code == 202
    size = len(orjson.dumps(big))
    assert response.json()["errors"] == [
        {"index": 1, "errors": {"item": f"is {size} bytes; the limit is 256 (ingest_max_event_bytes)"}}
    ]


def test_413_when_every_item_is_too_large(client, ingest_key, runtime_settings, redis_client):
    runtime_settings(ingest_max_event_bytes=256)
    lines = b"\n".join(orjson.dumps(event(n, message="x" * 300)) for n in range(2))
    response = post(
        client, lines, key=ingest_key, content_type="application/x-ndjson", HTTP_X_REQUEST_ID="req-big-0001"
    )
    assert response.status_code == 413
    size = len(lines.split(b"\n")[0])
    assert response.json() == {
        "detail": "Every event exceeds ingest_max_event_bytes (256 bytes); nothing was accepted.",
        "accepted": 0,
        "rejected": 2,
        "event_ids": [],
        "correlation_id": "req-big-0001",
        "errors": [
            {
                "index": i,
                "line": i + 1,
                "errors": {"item": f"is {size} bytes; the limit is 256 (ingest_max_event_bytes)"},
            }
            for i in range(2)
        ],
    }
    assert redis_client.xlen(streams.ingest_stream()) == 0


def test_one_too_large_and_one_invalid_item_is_422_not_413(client, ingest_key, runtime_settings):
    runtime_settings(ingest_max_event_bytes=256)
    response = post(client, [event(0, message="x" * 300), {"hostname": "a"}], key=ingest_key)
    assert response.status_code == 422


# --- authentication ---------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401_and_a_key_without_ingest_scope_is_403(client, api_keys):
    missing = post(client, [event()], key=None)
    assert (missing.status_code, missing.json()) == (401, {"detail": "Authentication credentials were not provided."})
    assert missing["WWW-Authenticate"] == 'Bearer realm="mutt"'
    wrong = post(client, [event()], key="mutt_deadbeef_not-a-real-secret")
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid or revoked API key."})
    assert post(client, [event()], key="junk").status_code == 401
    for scope in ("read", "write"):
        refused = post(client, [event()], key=api_keys[scope])
        assert refused.status_code == 403
        assert refused.json() == {"detail": "This API key does not have the 'ingest' scope (or 'admin')."}


def test_admin_keys_and_bearer_tokens_are_accepted(client, api_keys):
    assert post(client, [event()], key=api_keys["admin"]).status_code == 202
    bearer = client.post(
        "/api/v2/ingest", orjson.dumps(event()), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_keys['ingest']}",
    )  # fmt: skip
    assert bearer.status_code == 202


def test_steady_traffic_makes_no_database_query(client, ingest_key, django_assert_num_queries):
    assert post(client, [event()], key=ingest_key).status_code == 202  # looks the key up, records its use
    assert post(client, [event()], key="mutt_deadbeef_unknown").status_code == 401
    with django_assert_num_queries(0):
        for _ in range(3):
            assert post(client, [event()], key=ingest_key).status_code == 202
        assert post(client, [event()], key="mutt_deadbeef_unknown").status_code == 401  # remembered too


def test_a_revoked_key_stops_working_within_the_cache_ttl(client, ingest_key, monkeypatch):
    monkeypatch.setattr(key_cache, "ttl", 0.3)
    assert post(client, [event()], key=ingest_key).status_code == 202
    key_services.revoke_api_key(actor=Actor.cli("sec"), api_key=ApiKey.objects.get(name="ingest-key"), reason="leak")
    assert wait_for(lambda: post(client, [event()], key=ingest_key).status_code == 401, timeout=0.3 + 0.5)


def test_a_revoked_key_is_remembered_for_at_most_the_ttl(client, ingest_key, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(key_cache, "clock", lambda: now[0])
    assert post(client, [event()], key=ingest_key).status_code == 202
    key_services.revoke_api_key(actor=Actor.cli("sec"), api_key=ApiKey.objects.get(name="ingest-key"), reason="leak")
    now[0] += 4.9
    assert post(client, [event()], key=ingest_key).status_code == 202, "within the 5 s TTL the cached key answers"
    now[0] += 0.2
    assert post(client, [event()], key=ingest_key).status_code == 401


# --- versions and paths -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/ingest", "/ingest", "/ingest/"])
def test_legacy_paths_accept_the_same_bodies_and_say_they_are_deprecated(client, ingest_key, path, redis_client):
    response = post(client, [event(1)], key=ingest_key, path=path)
    assert response.status_code == 202
    assert response["X-API-Version"] == "v1"
    assert response["Deprecation"] == "true"
    assert "Sunset" in response
    assert response["Link"] == '</api/v2/>; rel="successor-version"'
    assert stream_events(redis_client)[0]["hostname"] == "edge-001"


def test_other_methods_and_versions_are_refused_in_the_api_error_shape(client, ingest_key):
    get = client.get("/api/v2/ingest", HTTP_X_API_KEY=ingest_key)
    assert (get.status_code, get.json(), get["Allow"]) == (405, {"detail": 'Method "GET" not allowed.'}, "POST")
    unknown = post(client, [event()], key=ingest_key, path="/api/v9/ingest")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": "This API version is not supported; use /api/v2/ (current) or /api/v1/ (deprecated)."
    }
    assert unknown["X-API-Version"] == "v2"


def test_refusals_carry_the_version_and_correlation_headers_too(client):
    response = post(client, [event()], key="   ", path="/api/v1/ingest", HTTP_X_REQUEST_ID="req-empty-key-1")
    assert (response.status_code, response.json()) == (401, {"detail": "Empty API key."})
    assert (response["X-API-Version"], response["Deprecation"]) == ("v1", "true")
    assert response["X-Correlation-ID"] == "req-empty-key-1"


def test_an_accept_header_the_api_would_refuse_does_not_matter(client, ingest_key):
    assert post(client, [event()], key=ingest_key, HTTP_ACCEPT="text/plain").status_code == 202


# --- metrics ----------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_events_latency_and_backlog_are_measured(client, ingest_key):
    before = {
        "partial": _sample("mutt_ingest_requests_total", status="202", reason="partial"),
        "unauth": _sample("mutt_ingest_requests_total", status="401", reason="unauthenticated"),
        "accepted": _sample("mutt_ingest_events_total", outcome="accepted"),
        "rejected": _sample("mutt_ingest_events_total", outcome="rejected"),
        "timed": _sample("mutt_ingest_request_seconds_count"),
    }
    post(client, [event(0), event(1), {"hostname": "x"}], key=ingest_key)
    post(client, [event()], key=None)
    assert _sample("mutt_ingest_requests_total", status="202", reason="partial") == before["partial"] + 1
    assert _sample("mutt_ingest_requests_total", status="401", reason="unauthenticated") == before["unauth"] + 1
    assert _sample("mutt_ingest_events_total", outcome="accepted") == before["accepted"] + 2
    assert _sample("mutt_ingest_events_total", outcome="rejected") == before["rejected"] + 1
    assert _sample("mutt_ingest_request_seconds_count") == before["timed"] + 2
    assert _sample("mutt_ingest_backlog") == 2


def test_a_database_outage_keeps_known_keys_working_and_refuses_unknown_ones_with_503(client, ingest_key, monkeypatch):
    from django.db import OperationalError

    from ingest import auth

    now = [1000.0]
    monkeypatch.setattr(key_cache, "clock", lambda: now[0])
    assert post(client, [event()], key=ingest_key).status_code == 202

    def database_down(raw_key: str) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(auth, "find_active_key", database_down)
    now[0] += 60  # long past the TTL: the cache must ask again, and cannot
    assert post(client, [event()], key=ingest_key).status_code == 202
    unknown = post(client, [event()], key="mutt_deadbeef_never-seen")
    assert (unknown.status_code, unknown["Retry-After"]) == (503, "5")
    assert unknown.json() == {"detail": "API keys cannot be checked right now (database unavailable); retry later."}


def test_a_gzip_body_is_inflated_as_it_is_read_without_ever_holding_a_bomb():
    import gzip
    import tracemalloc
    import zlib

    two = gzip.compress(b'{"hostname": "a", "message": "one"}\n') + gzip.compress(
        b'{"hostname": "b", "message": "two"}'
    )
    assert read_body(io.BytesIO(two).read, str(len(two)), 4096, named_by="x", gzip=True) == (
        b'{"hostname": "a", "message": "one"}\n{"hostname": "b", "message": "two"}'
    ), "several gzip members are one body"
    # 256 MiB of zeros in about 256 KiB of gzip, read against a 1 MiB limit.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(squeeze.compress(zeros) for _ in range(256)) + squeeze.flush()
    tracemalloc.start()
    try:
        with pytest.raises(BodyRefused) as refused:
            read_body(io.BytesIO(bomb).read, None, 1 << 20, named_by="ingest_max_body_bytes", gzip=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (refused.value.status, refused.value.reason) == (413, "body_too_large")
    assert peak < 4 << 20, f"inflating a bomb held {peak} bytes"
    for broken, detail in [
        (gzip.compress(b"x" * 1000)[:-12], "The gzip body ends before the end of its stream."),
        (b"not gzip at all", "The body is not valid gzip (Content-Encoding: gzip): Error -3 while decompressing data: "
         "incorrect header check."),
    ]:  # fmt: skip
        with pytest.raises(BodyRefused) as refused:
            read_body(io.BytesIO(broken).read, None, 4096, named_by="x", gzip=True)
        assert (refused.value.status, refused.value.body["detail"]) == (400, detail)


def test_integers_the_standard_library_cannot_read_are_refused_clearly(client, ingest_key, redis_client):
    long = 7 * 10**1000  # past a double (orjson refuses it as infinite), within Python's 4,300 digits
    response = post(client, json.dumps([{"hostname": "a", "message": "m", "n": long}]), key=ingest_key)
    assert response.status_code == 202, response.json()
    huge = b'{"hostname": "a", "message": "m", "n": ' + b"7" * 5000 + b"}"
    response = post(client, huge, key=ingest_key)
    assert response.status_code == 400
    assert response.json()["detail"] == "Malformed JSON: an integer has more than 4300 digits."
    # orjson refuses the 400-digit integer as infinite, so the standard library reads the rest, as strictly.
    for text, detail in [(b"1e400", "the number 1e400… is too large"), (b"NaN", "NaN is not JSON")]:
        body = b'{"hostname": "a", "message": "m", "n": ' + b"7" * 400 + b', "x": ' + text + b"}"
        response = post(client, body, key=ingest_key)
        assert response.status_code == 400
        assert detail in response.json()["detail"]
    # Nested past what the standard library reads, with a long integer: that line alone is refused.
    deep = b'{"hostname": "b", "message": "m", "v": ' + b"[" * 1000 + b"12345678901234567890" + b"]" * 1000 + b"}"
    lines = b'{"hostname": "a", "message": "ok", "n": 12345678901234567890123}\n' + deep + b"\n"
    response = post(client, lines, key=ingest_key, content_type="application/x-ndjson")
    assert response.status_code == 202, response.json()
    assert response.json()["errors"] == [{"index": 1, "line": 2, "errors": {"item": schema.TOO_DEEP_ERROR}}]
    extras = [
        json.loads(entry[contracts.PAYLOAD_FIELD])["extra"] for _, entry in redis_client.xrange(streams.ingest_stream())
    ]
    assert extras == [{"n": long}, {"n": 12345678901234567890123}]


@pytest.mark.parametrize(
    "value",
    [1733222222123456789, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**19, -(2**63), -(2**63) - 1, -(10**19), 10**25],
)
def test_the_slow_exact_parse_is_chosen_exactly_when_orjson_would_not_keep_the_integer(value):
    raw = b'{"n": %d}' % value
    parsed = orjson.loads(raw)["n"]
    orjson_exact = type(parsed) is int and parsed == value
    assert exactjson.may_hold_long_integer(raw) is not orjson_exact
    assert exactjson.loads(raw) == {"n": value}
    assert type(exactjson.loads(raw)["n"]) is int


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_nanosecond_timestamps_take_the_fast_path_and_a_2_to_the_64_stays_exact(
    client, ingest_key, redis_client, monkeypatch, content_type
):
    slow = []
    loads_exact = exactjson.loads_exact

    def counted(raw):
        slow.append(raw)
        return loads_exact(raw)

    monkeypatch.setattr(exactjson, "loads_exact", counted)
    nanos = 1733222222123456789  # 19 digits, as OpenTelemetry, Vector and Loki send
    fast = [event(1, time_unix_nano=nanos), event(2, time_unix_nano=-nanos)]
    body = json.dumps(fast[0]) if content_type == "application/json" else "\n".join(json.dumps(e) for e in fast)
    assert post(client, body, key=ingest_key, content_type=content_type).status_code == 202
    assert slow == [], "orjson reads a 19-digit integer exactly: no second parse"
    body = json.dumps(event(3, big=2**64))  # one object, one line: the same body in both types
    assert post(client, body, key=ingest_key, content_type=content_type).status_code == 202
    assert len(slow) == 1
    extras = [
        json.loads(entry[contracts.PAYLOAD_FIELD])["extra"] for _, entry in redis_client.xrange(streams.ingest_stream())
    ]
    expected = (
        [{"time_unix_nano": nanos}]
        if content_type == "application/json"
        else [{"time_unix_nano": nanos}, {"time_unix_nano": -nanos}]
    )
    assert extras == [*expected, {"big": 2**64}]
    assert all(type(value) is int for extra in extras for value in extra.values())
