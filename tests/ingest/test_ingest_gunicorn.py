"""Ingest through a real gunicorn (as `mutt up` runs it), with requests written byte by byte as real
senders write them: chunked bodies (Vector, Fluent Bit) and rsyslog omhttp's gzip-compressed
text/plain NDJSON batches.

Debian's rsyslog (bookworm, 8.2302) ships no omhttp module (it is built only with libcurl, which the
package does not link), so the omhttp request here is the one omhttp's source builds for
``batch.format="newline"`` and ``compress="on"``: ``Content-Type: text/plain``, ``Content-Encoding:
gzip``, a Content-Length, an empty ``Expect:``, and the messages joined by a newline with none after
the last.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from core import streams
from tests.ingest.helpers import event, stream_events

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


class Gunicorn:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def send(self, raw: bytes) -> tuple[int, dict[str, str], dict]:
        """Send ``raw`` (a whole HTTP/1.1 request) on a new connection; the status, headers and JSON body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers, orjson.loads(body) if body else {}

    def head(self, key: str, *lines: str) -> bytes:
        fixed = [
            "POST /api/v2/ingest HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Accept: */*",
            f"X-API-Key: {key}",
            "Connection: close",
        ]
        return ("\r\n".join([*fixed, *lines]) + "\r\n\r\n").encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture
def gunicorn(child_env, clean_pipeline, tmp_path) -> Iterator[Gunicorn]:
    """gunicorn with MUTT's config and one worker; settings changed before it starts are what it reads."""
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "mutt_project/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=BASE_DIR, env=child_env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield Gunicorn(port, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


def chunked(*parts: bytes) -> bytes:
    """``parts`` in HTTP/1.1 chunked framing, with the last (empty) chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_to_its_end_and_bounded(gunicorn_small_body, ingest_key, redis_client):
    server = gunicorn_small_body
    lines = [orjson.dumps(event(n)) + b"\n" for n in range(6)]
    head = server.head(ingest_key, "Content-Type: application/x-ndjson", "Transfer-Encoding: chunked")
    # Chunk borders fall inside lines, as a streaming sender's buffers do.
    body = b"".join(lines)
    status, _, answer = server.send(head + chunked(body[:10], body[10:100], body[100:]))
    assert status == 202, answer
    assert answer["accepted"] == 6
    assert [e["hostname"] for e in stream_events(redis_client)] == [f"edge-{n:03d}" for n in range(6)]

    # Past ingest_max_body_bytes (4096 here) without a Content-Length: 413 from the count, nothing queued.
    big = b"".join(orjson.dumps(event(n, message="x" * 200)) + b"\n" for n in range(30))
    assert len(big) > 4096
    status, _, answer = server.send(head + chunked(*(big[i : i + 1000] for i in range(0, len(big), 1000))))
    assert status == 413
    assert answer["detail"] == (
        "The request body exceeds the limit of 4096 bytes (ingest_max_body_bytes); send smaller batches."
    )
    assert redis_client.xlen(streams.ingest_stream()) == 6

    # A malformed chunk size: 400, not a 500, and the worker keeps serving.
    status, _, answer = server.send(head + b"zz\r\n" + lines[0] + b"\r\n0\r\n\r\n")
    assert status == 400
    assert answer["detail"] == "The body could not be read: malformed chunked encoding (InvalidChunkSize)."
    status, _, _ = server.send(head + chunked(lines[0]))
    assert status == 202
    assert redis_client.xlen(streams.ingest_stream()) == 7


@pytest.fixture
def gunicorn_small_body(runtime_settings, request) -> Gunicorn:
    runtime_settings(ingest_max_body_bytes=4096)
    return request.getfixturevalue("gunicorn")


def omhttp_request(server: Gunicorn, key: str, messages: list[bytes]) -> bytes:
    """The request omhttp sends for one batch with batch.format="newline" and compress="on"."""
    body = gzip.compress(b"\n".join(messages))
    head = server.head(
        key,
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
        "Content-Encoding: gzip",
    )
    return head + body


def test_an_omhttp_batch_gzip_text_plain_is_accepted_and_refused_items_are_logged(gunicorn, ingest_key, redis_client):
    messages = [orjson.dumps(event(n)) for n in range(4)]
    messages.insert(2, orjson.dumps({"hostname": "edge-bad", "message": "m", "syslog_severity": "loud"}))
    status, headers, answer = gunicorn.send(omhttp_request(gunicorn, ingest_key, messages))
    assert status == 202, answer
    assert (answer["accepted"], answer["rejected"]) == (4, 1)
    assert [e["hostname"] for e in stream_events(redis_client)] == [f"edge-{n:03d}" for n in range(4)]

    request_id = headers["X-Request-ID"]
    deadline = time.monotonic() + 5
    while True:  # the log line is written before the response; give the pipe a moment
        refused = [line for line in gunicorn.log.read_text().splitlines() if "ingest refused an item" in line]
        if refused or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(refused) == 1, gunicorn.log.read_text()[-3000:]
    line = refused[0]
    assert "WARNING" in line
    for fact in ("key=ingest-key", "index=2", "line=3", f"request_id={request_id}", "syslog_severity: must be 0-7"):
        assert fact in line, line


def test_a_gzip_bomb_is_413_and_the_worker_keeps_serving(gunicorn_bomb_limit, ingest_key, redis_client):
    server = gunicorn_bomb_limit
    # 64 MiB of a repeated line inflates from about 200 KiB: under the limit on the wire, far over it inflated.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    line = orjson.dumps(event(0)) + b"\n"
    block = line * ((1 << 20) // len(line))
    bomb = b"".join(squeeze.compress(block) for _ in range(64)) + squeeze.flush()
    assert len(bomb) < 262144 < 64 * len(block)
    head = server.head(ingest_key, "Content-Type: text/plain", f"Content-Length: {len(bomb)}", "Content-Encoding: gzip")
    status, _, answer = server.send(head + bomb)
    assert status == 413
    assert answer["detail"] == (
        "The request body inflated from gzip exceeds the limit of 262144 bytes (ingest_max_body_bytes); "
        "send smaller batches."
    )
    assert redis_client.xlen(streams.ingest_stream()) == 0
    status, _, answer = server.send(omhttp_request(server, ingest_key, [orjson.dumps(event(1))]))
    assert (status, answer["accepted"]) == (202, 1)


@pytest.fixture
def gunicorn_bomb_limit(runtime_settings, request) -> Gunicorn:
    runtime_settings(ingest_max_body_bytes=262144)
    return request.getfixturevalue("gunicorn")
