"""The forwarder's HTTP transport against mock_moog and a scripted server: keep-alive, framing, errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import orjson
import pytest

from delivery.transport import Transport, TransportError
from devtools.mock_moog import MockMoog
from tests.support.waiting import wait_for

EVENT = {"signature": "rtr-1:7:", "source": "rtr-1", "severity": 4, "description": "link down"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def mock() -> Iterator[MockMoog]:
    server = MockMoog(port=0).start()
    yield server
    server.close()


@pytest.fixture
def transport() -> Iterator[Transport]:
    sender = Transport()
    yield sender
    sender.close()


def post(transport: Transport, url: str, body: bytes = b"{}", timeout: float = 5.0, **headers: str):
    return transport.post(url, body, {**JSON, **headers}, timeout=timeout, connect_timeout=2.0)


class ScriptedServer:
    """Answers each request on a connection with the next canned answer, then does what it is told."""

    def __init__(self, answers: list[bytes], *, close_after: int | None = None) -> None:
        self.answers = answers
        self.close_after = close_after  # close each connection after this many answers (no notice)
        self.connections = 0
        self.closed = 0  # connections this server has closed
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/events?x=1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                served = 0
                while self.close_after is None or served < self.close_after:
                    request = _read_request(reader)
                    if request is None:
                        break
                    self.requests.append(request)
                    conn.sendall(self.answers[min(len(self.requests), len(self.answers)) - 1])
                    served += 1
            self.closed += 1

    def close(self) -> None:
        self.listener.close()


def _read_request(reader) -> bytes | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            return None
        head += line
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length"))
    return head + reader.read(length)


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answers: list[bytes], **options: int) -> ScriptedServer:
        servers.append(ScriptedServer(answers, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_posts_reuse_one_kept_alive_connection(mock, transport):
    for _ in range(5):
        response = post(transport, f"{mock.url}/events", orjson.dumps({"events": [EVENT]}), apiKey="k")
        assert (response.status, orjson.loads(response.body)) == (202, {"accepted": 1})
    assert len(mock.events()) == 5
    assert {record["auth"] for record in mock.events()} == {"apiKey"}
    assert len(mock._connections) == 1


def test_the_request_is_one_well_formed_write(scripted, transport):
    server = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    post(transport, server.url, b'{"a":1}', Authorization="Basic abc")
    (request,) = server.requests
    head, body = request.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /events?x=1 HTTP/1.1"
    assert b"Content-Length: 7" in lines
    assert b"Authorization: Basic abc" in lines
    assert body == b'{"a":1}'


def test_answers_framed_by_length_chunks_or_close_are_read_whole(scripted, transport):
    server = scripted(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 4\r\nRetry-After: 3\r\n\r\nokay",
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.0 500 Oops\r\n\r\nuntil the end",
        ],
        close_after=3,
    )
    first, chunked, until_close = (post(transport, server.url) for _ in range(3))
    assert (first.status, first.body, first.headers.get("Retry-After")) == (202, b"okay", "3")
    assert (chunked.status, chunked.body) == (503, b"hello world")
    assert (until_close.status, until_close.body) == (500, b"until the end")


def test_a_connection_the_server_closed_while_idle_is_reopened_not_failed(scripted, transport):
    server = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], close_after=1)
    for sent in range(1, 4):
        assert post(transport, server.url).status == 200
        assert wait_for(lambda n=sent: server.closed == n, timeout=5), "the server hung up while the client was idle"
    assert server.connections == 3


def test_connection_close_in_the_answer_makes_the_next_request_reconnect(scripted, transport):
    server = scripted([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"], close_after=1)
    assert [post(transport, server.url).status for _ in range(2)] == [200, 200]
    assert server.connections == 2


def test_no_answer_in_time_is_a_timeout(mock, transport):
    mock.configure(timeout=True, times=1)
    with pytest.raises(TransportError) as caught:
        post(transport, f"{mock.url}/events", timeout=0.3)
    assert caught.value.reason == "timeout"
    assert post(transport, f"{mock.url}/events").status == 202, "a new connection after the failure"


def test_a_dropped_request_or_a_refused_connection_is_a_connection_error(mock, transport):
    mock.configure(drop=True, times=1)
    with pytest.raises(TransportError) as dropped:
        post(transport, f"{mock.url}/events")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(TransportError) as refused:
        post(transport, f"http://127.0.0.1:{port}/events")
    assert (dropped.value.reason, refused.value.reason) == ("connection_error", "connection_error")


def test_a_garbled_answer_is_a_connection_error(scripted, transport):
    server = scripted([b"SMTP ready\r\n\r\n"])
    with pytest.raises(TransportError) as caught:
        post(transport, server.url)
    assert caught.value.reason == "connection_error"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # the connection ends inside the body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # ... inside a chunk
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"Content-Length: 0\r\n\r\n",  # over 100 headers
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",  # a 64 KiB+ line
    ],
    ids=["truncated-body", "truncated-chunk", "too-many-headers", "header-line-too-long"],
)
def test_an_answer_cut_short_or_over_the_limits_is_a_connection_error(scripted, transport, answer):
    server = scripted([answer], close_after=1)
    with pytest.raises(TransportError) as caught:
        post(transport, server.url)
    assert caught.value.reason == "connection_error"
    assert post(transport, scripted([b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"]).url).status == 202


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("ftp://moog.example/events", {}),
        ("http://moog.example/a b", {}),
        ("http://moog.example/events", {"X-Evil": "1\r\nHost: elsewhere"}),
    ],
)
def test_what_cannot_be_sent_safely_is_refused_before_connecting(transport, url, headers):
    with pytest.raises(TransportError) as caught:
        post(transport, url, **headers)
    assert caught.value.reason == "connection_error"
    assert "elsewhere" not in str(caught.value), "header values are never echoed"
