"""mock_moog over real HTTP: it records both delivery formats and fails exactly as told."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from delivery.destinations.moogsoft_events import build_request
from devtools.mock_moog import MockMoog

WEBHOOK_EVENT = {"signature": "rtr-1:7:", "source": "rtr-1", "severity": 4, "description": "link down"}
CLOUD_EVENT = {"source": "rtr-2", "check": "rule-7", "severity": "major", "description": "link down"}


@pytest.fixture
def mock() -> Iterator[MockMoog]:
    server = MockMoog(port=0).start()
    yield server
    server.close()


class Client:
    """One keep-alive connection to the mock, as a forwarder holds it."""

    def __init__(self, mock: MockMoog, timeout: float = 5.0) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=timeout)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        self.connection.request(
            method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = self.connection.getresponse()
        raw = response.read()
        return response.status, response.headers, orjson.loads(raw) if raw else None

    def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        status, _, answer = self.call("POST", path, body, **kwargs)
        return status, answer

    def get(self, path: str) -> tuple[int, Any]:
        status, _, answer = self.call("GET", path)
        return status, answer

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def client(mock: MockMoog) -> Iterator[Client]:
    connection = Client(mock)
    yield connection
    connection.close()


def control(client: Client, **mode: Any) -> dict[str, Any]:
    status, answer = client.post("/control", mode)
    assert status == 200, answer
    return answer["mode"]


# --- recording ----------------------------------------------------------------------------------------


def test_a_webhook_batch_is_accepted_and_each_event_recorded(client):
    status, answer = client.post("/events", {"events": [WEBHOOK_EVENT, {**WEBHOOK_EVENT, "signature": "rtr-1:8:"}]})
    assert (status, answer) == (202, {"accepted": 2})
    status, listing = client.get("/events")
    assert status == 200
    assert listing["count"] == 2
    first, second = listing["events"]
    assert first["event"] == WEBHOOK_EVENT
    assert second["event"]["signature"] == "rtr-1:8:"
    assert {first["format"], first["path"], first["request"], first["seq"]} == {"webhook", "/events", 1}
    assert second["seq"] == 2
    assert first["received_at"].endswith("+00:00")
    assert first["auth"] is None


def test_an_events_api_array_is_accepted_on_any_path(client):
    assert client.post("/api/v1/integrations/events", [CLOUD_EVENT, CLOUD_EVENT]) == (202, {"accepted": 2})
    events = client.get("/events")[1]["events"]
    assert [(e["format"], e["path"]) for e in events] == [("events_api", "/api/v1/integrations/events")] * 2


def test_a_single_event_object_is_accepted(client):
    assert client.post("/webhook", CLOUD_EVENT) == (202, {"accepted": 1})
    (record,) = client.get("/events")[1]["events"]
    assert (record["format"], record["path"], record["event"]) == ("single", "/webhook", CLOUD_EVENT)


def test_mutt_requests_in_both_formats_are_recorded_as_sent():
    alert = {
        "kind": "rule", "event_id": "e-1", "correlation_id": "corr-1", "hostname": "rtr-9", "rule_id": 3,
        "team": "netops", "severity": "critical", "handling": "page_only", "environment": "prod",
        "description": "BGP down", "event_time": "2026-11-26T10:00:00+00:00", "trap_oid": "",
        "source_type": "syslog", "signature": "rtr-9:3:",
    }  # fmt: skip
    with MockMoog() as mock:
        connection = Client(mock)
        for fmt in ("webhook", "events_api"):
            request = build_request([alert], fmt)
            assert connection.post("/events", request.body, headers=request.headers) == (202, {"accepted": 1})
        webhook, cloud = connection.get("/events")[1]["events"]
        connection.close()
    assert webhook["format"] == "webhook"
    assert (webhook["event"]["external_id"], webhook["event"]["severity"]) == ("e-1", 5)  # the event id
    assert cloud["format"] == "events_api"
    assert (cloud["event"]["tags"]["correlation_id"], cloud["event"]["severity"]) == ("corr-1", "critical")


def test_malformed_json_is_refused_and_recorded_as_an_error_not_an_event(client):
    status, answer = client.post("/events", b'{"events": [')
    assert status == 400
    assert answer["error"].startswith("malformed JSON")
    assert client.get("/events")[1] == {"count": 0, "events": []}
    count, errors = client.get("/errors")[1].values()
    assert count == 1
    assert errors[0]["path"] == "/events"
    assert errors[0]["body"] == '{"events": ['


@pytest.mark.parametrize("body", [[1, 2], {"events": "not a list"}, "text", 42])
def test_json_that_is_not_events_is_refused(client, body):
    assert client.post("/events", body)[0] == 400
    assert client.get("/events")[1]["count"] == 0
    assert client.get("/errors")[1]["count"] == 1


def test_delete_events_resets_the_record(client):
    client.post("/events", [CLOUD_EVENT])
    client.post("/events", b"nope")
    status, _, answer = client.call("DELETE", "/events")
    assert (status, answer) == (200, {"deleted": 1})
    assert client.get("/events")[1] == {"count": 0, "events": []}
    assert client.get("/errors")[1] == {"count": 0, "errors": []}
    client.post("/events", [CLOUD_EVENT])
    assert client.get("/events")[1]["events"][0]["seq"] == 1


def test_get_events_limit_returns_the_most_recent(client):
    client.post("/events", [{"n": n} for n in range(5)])
    listing = client.get("/events?limit=2")[1]
    assert listing["count"] == 5
    assert [e["event"]["n"] for e in listing["events"]] == [3, 4]


def test_only_the_newest_events_are_kept_beyond_max_events():
    with MockMoog(max_events=3) as mock:
        connection = Client(mock)
        connection.post("/events", [{"n": n} for n in range(5)])
        listing = connection.get("/events")[1]
        connection.close()
    assert listing["count"] == 5
    assert [e["event"]["n"] for e in listing["events"]] == [2, 3, 4]


def test_requests_on_one_keep_alive_connection_reuse_it(client):
    client.post("/events", [CLOUD_EVENT])
    sock = client.connection.sock
    for _ in range(20):
        assert client.post("/events", [CLOUD_EVENT])[0] == 202
    assert client.connection.sock is sock


def test_concurrent_posts_are_all_counted(mock):
    def post_many() -> None:
        connection = Client(mock)
        for _ in range(50):
            assert connection.post("/events", {"events": [CLOUD_EVENT, CLOUD_EVENT]})[0] == 202
        connection.close()

    threads = [threading.Thread(target=post_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mock.state.status()["stats"] == {"requests": 400, "answers": {"202": 400}, "events": 800, "errors": 0}
    assert len({record["seq"] for record in mock.events()}) == 800


# --- health and control -----------------------------------------------------------------------------


def test_health_is_ok_until_told_otherwise(client):
    assert client.get("/health") == (200, {"status": "ok"})
    control(client, health_status=503)
    assert client.get("/health") == (503, {"status": "unavailable"})
    control(client, reset=True)
    assert client.get("/health") == (200, {"status": "ok"})


def test_a_status_fault_answers_the_next_posts_then_recovers(client):
    control(client, status=500, times=3)
    answers = [client.post("/events", [CLOUD_EVENT])[0] for _ in range(4)]
    assert answers == [500, 500, 500, 202]
    assert client.get("/events")[1]["count"] == 1, "refused posts record nothing"
    assert client.get("/control")[1]["stats"]["answers"] == {"500": 3, "202": 1}
    assert client.get("/control")[1]["mode"]["fault"] is None


def test_429_with_retry_after_is_answered_until_changed(client):
    control(client, status=429, retry_after=2)
    for _ in range(3):
        status, headers, answer = client.call("POST", "/events", [CLOUD_EVENT])
        assert status == 429
        assert headers["Retry-After"] == "2"
        assert "error" in answer
    control(client, reset=True)
    assert client.post("/events", [CLOUD_EVENT])[0] == 202


def test_latency_delays_every_answer(client):
    control(client, latency_ms=300)
    started = time.monotonic()
    assert client.post("/events", [CLOUD_EVENT])[0] == 202
    assert time.monotonic() - started >= 0.3
    assert client.get("/control")[1]["mode"]["latency_ms"] == 300


def test_timeout_never_answers_so_the_client_gives_up(mock, client):
    control(client, timeout=True, times=1)
    impatient = Client(mock, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        impatient.post("/events", [CLOUD_EVENT])
    assert 0.3 <= time.monotonic() - started < 2
    impatient.close()
    assert client.post("/events", [CLOUD_EVENT])[0] == 202, "times=1: the next post is answered"
    assert client.get("/events")[1]["count"] == 1
    assert mock.state.status()["stats"]["answers"] == {"timed_out": 1, "202": 1}


def test_a_held_request_is_let_go_when_the_timeout_fault_is_reset(mock, client):
    control(client, timeout=True)
    patient = Client(mock, timeout=10)
    started = time.monotonic()
    threading.Timer(0.3, lambda: mock.configure(reset=True)).start()
    with pytest.raises(http.client.RemoteDisconnected):
        patient.post("/events", [CLOUD_EVENT])
    assert time.monotonic() - started < 3
    patient.close()


def test_drop_closes_the_connection_without_an_answer(mock, client):
    control(client, drop=True, times=1)
    victim = Client(mock)
    with pytest.raises(ConnectionError):
        victim.post("/events", [CLOUD_EVENT])
    victim.close()
    assert client.post("/events", [CLOUD_EVENT])[0] == 202
    assert mock.state.status()["stats"]["answers"] == {"dropped": 1, "202": 1}


def test_reset_restores_normal_answers(client):
    control(client, status=503, latency_ms=50, health_status=500)
    mode = control(client, reset=True)
    assert mode == {
        "status": None, "timeout": False, "drop": False, "times": None, "retry_after": None, "latency_ms": 0,
        "health_status": 200, "require_auth": False, "fault": None,
    }  # fmt: skip
    assert client.post("/events", [CLOUD_EVENT])[0] == 202


def test_a_new_fault_replaces_the_previous_one_and_keeps_latency(client):
    control(client, status=500, times=5, latency_ms=10)
    mode = control(client, drop=True, times=1)
    assert (mode["fault"], mode["status"], mode["times"], mode["latency_ms"]) == ("drop", None, 1, 10)


def test_get_control_shows_the_mode_and_counters(client):
    control(client, status=502, times=2)
    client.post("/events", [CLOUD_EVENT])
    status, shown = client.get("/control")
    assert status == 200
    assert shown["mode"]["fault"] == "status"
    assert shown["mode"]["times"] == 1
    assert shown["stats"] == {"requests": 1, "answers": {"502": 1}, "events": 0, "errors": 0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"stauts": 500}, "unknown control keys ['stauts']"),
        ({"status": 500, "drop": True}, "choose one of status, timeout and drop"),
        ({"status": 200}, "status must be an HTTP status between 400 and 599"),
        ({"retry_after": 2}, "times and retry_after need a fault"),
        ({"drop": True, "retry_after": 2}, "retry_after goes with status"),
        ({"status": 500, "times": 0}, "times must be a whole number of at least 1"),
        ({"latency_ms": -1}, "latency_ms must be a number of at least 0"),
        ({"timeout": "yes"}, "timeout must be true or false"),
        ([1], "the control body must be a JSON object"),
    ],
)
def test_an_invalid_control_is_refused_and_changes_nothing(client, body, message):
    status, answer = client.post("/control", body)
    assert status == 400
    assert message in answer["error"]
    assert client.get("/control")[1]["mode"]["fault"] is None


def test_required_auth_accepts_the_key_in_any_scheme_and_records_only_the_scheme(client):
    control(client, require_auth="k-123")
    assert client.post("/events", [CLOUD_EVENT], headers={"apiKey": "wrong"})[0] == 401
    assert client.post("/events", [CLOUD_EVENT])[0] == 401
    basic = base64.b64encode(b"mutt:k-123").decode()
    assert client.post("/events", [CLOUD_EVENT], headers={"apiKey": "k-123"})[0] == 202
    assert client.post("/events", [CLOUD_EVENT], headers={"Authorization": f"Basic {basic}"})[0] == 202
    assert client.post("/events", [CLOUD_EVENT], headers={"Authorization": "Bearer k-123"})[0] == 202
    listing = client.get("/events")[1]
    assert [e["auth"] for e in listing["events"]] == ["apiKey", "basic", "bearer"]
    assert "k-123" not in json.dumps(listing)
    assert client.get("/control")[1]["mode"]["require_auth"] is True


def raw_exchange(mock: MockMoog, request: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the mock answers until it closes (or goes quiet)."""
    with socket.create_connection(("127.0.0.1", mock.port), timeout=2) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass  # kept alive: the answer is complete
    return answer


def test_header_names_are_matched_in_any_case(client):
    control(client, require_auth="k-123")
    assert client.post("/events", [CLOUD_EVENT], headers={"APIKEY": "k-123"})[0] == 202
    assert client.get("/events")[1]["events"][0]["auth"] == "apiKey"


def test_a_malformed_request_line_or_version_is_refused(mock):
    assert raw_exchange(mock, b"GET /a b HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # Without a version it understands, http.server answers as to HTTP/0.9: the error page alone.
    assert b"Error code: 400" in raw_exchange(mock, b"NONSENSE\r\n\r\n")
    assert b"Error code: 400" in raw_exchange(mock, b"POST /events HTTP/x.y\r\n\r\n")
    assert b"Error code: 505" in raw_exchange(mock, b"POST /events HTTP/2.0\r\n\r\n")
    assert mock.events() == []


def test_too_many_headers_are_refused(mock):
    headers = b"".join(b"X-%d: 1\r\n" % n for n in range(101))
    assert raw_exchange(mock, b"POST /events HTTP/1.1\r\n" + headers + b"\r\n").startswith(b"HTTP/1.1 431 ")


def test_an_http_1_0_request_is_answered_then_the_connection_closed(mock):
    body = orjson.dumps([CLOUD_EVENT])
    answer = raw_exchange(mock, b"POST /events HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 202 ")
    assert b"\r\nConnection: close\r\n" in answer
    assert len(mock.events()) == 1


def test_expect_100_continue_gets_continue_then_the_answer(mock):
    body = orjson.dumps([CLOUD_EVENT])
    head = b"POST /events HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer = raw_exchange(mock, head + body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 ")


def test_unknown_resources_are_404(client):
    assert client.get("/nothing")[0] == 404
    assert client.call("DELETE", "/control")[0] == 404
    assert client.post("/health", {})[0] == 405


def test_close_returns_promptly_with_idle_and_held_connections(mock):
    idle = Client(mock)
    assert idle.get("/health")[0] == 200
    mock.configure(timeout=True)
    held = Client(mock, timeout=10)
    outcome: list[BaseException] = []

    def post_and_wait() -> None:
        try:
            held.post("/events", [CLOUD_EVENT])
        except (ConnectionError, http.client.HTTPException) as exc:
            outcome.append(exc)

    holder = threading.Thread(target=post_and_wait)
    holder.start()
    time.sleep(0.2)
    started = time.monotonic()
    mock.close()
    assert time.monotonic() - started < 2
    holder.join(5)
    assert not holder.is_alive()
    assert len(outcome) == 1, "the held request ends with a closed connection, not an answer"
    idle.close()
    held.close()
