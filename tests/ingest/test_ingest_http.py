"""Ingest over a real socket (pytest-django's live server thread), not the test client."""

from __future__ import annotations

import http.client
import socket
from urllib.parse import urlsplit

import orjson
import pytest

from core import streams
from tests.ingest.helpers import event

pytestmark = pytest.mark.django_db(transaction=True)


def connect(live_server) -> http.client.HTTPConnection:
    address = urlsplit(live_server.url)
    return http.client.HTTPConnection(address.hostname, address.port, timeout=10)


def test_an_ndjson_batch_over_http_is_accepted_and_queued(live_server, ingest_key, redis_client):
    body = b"\n".join(orjson.dumps(event(n)) for n in range(50))
    conn = connect(live_server)
    conn.request(
        "POST", "/api/v2/ingest", body=body,
        headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {ingest_key}"},
    )  # fmt: skip
    response = conn.getresponse()
    payload = orjson.loads(response.read())
    assert response.status == 202
    assert payload["accepted"] == 50
    assert response.getheader("X-Correlation-ID") == payload["correlation_id"] == response.getheader("X-Request-ID")
    assert redis_client.xlen(streams.ingest_stream()) == 50


def test_an_announced_oversized_body_is_refused_without_being_sent(live_server, ingest_key, redis_client):
    conn = connect(live_server)
    # Only the headers go out: the server must answer from Content-Length alone.
    conn.putrequest("POST", "/ingest")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("X-API-Key", ingest_key)
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert orjson.loads(response.read())["limit_bytes"] == 16 * 2**20  # ingest_max_body_bytes
    assert response.getheader("Deprecation") == "true"
    assert redis_client.xlen(streams.ingest_stream()) == 0


def test_a_client_that_disconnects_mid_body_gets_400_and_nothing_is_queued(live_server, ingest_key, redis_client):
    # Whole NDJSON lines arrive, then the client stops sending: those lines are not the batch it meant.
    arrived = b"\n".join(orjson.dumps(event(n)) for n in range(5)) + b"\n"
    address = urlsplit(live_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        head = (
            f"POST /api/v2/ingest HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/x-ndjson\r\n"
            f"X-API-Key: {ingest_key}\r\nContent-Length: {len(arrived) + 1000}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + arrived)
        sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        payload = orjson.loads(response.read())
    assert response.status == 400
    assert payload["detail"].startswith(f"The body is shorter than its Content-Length: {len(arrived)} of ")
    assert redis_client.xlen(streams.ingest_stream()) == 0
