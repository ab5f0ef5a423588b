"""DLQ test helpers: entries shaped exactly as the alerter and the forwarder write them, and a small local
HTTP server (stdlib, 127.0.0.1, port 0) that records requests, for Moogsoft health probes and webhooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from core import contracts, streams
from tests.support.events import make_alert as base_alert
from tests.support.events import make_event


def make_alert(**overrides: Any) -> dict[str, Any]:
    """An alert as the alerter queues it, after the forwarder counted some attempts."""
    return base_alert(**{"attempts": 10, "last_error": "http_503", **overrides})


def add_moog_entry(
    client: Any,
    *,
    reason: str = "retries_exhausted",
    alert: dict[str, Any] | None = None,
    status: int = 503,
    response: str = "upstream unavailable",
) -> tuple[str, dict[str, Any]]:
    """One Moogsoft DLQ entry with the forwarder's fields; returns (entry id, alert)."""
    alert = alert or make_alert()
    record: contracts.MoogDeadLetter = {
        "reason": reason,
        "status": status,
        "response": response,
        "attempts": int(alert.get("attempts", 0)),
        "event_id": alert.get("event_id", ""),
        "source_id": _source_id(),
        "failed_at": datetime.now(UTC).isoformat(),
        "e": streams.dumps(alert),  # as the forwarder writes it: integers past 64 bits included
    }
    return _add(client, contracts.MOOG_QUEUE, record), alert


def add_alerter_entry(
    client: Any,
    *,
    reason: str = "shed",
    event: dict[str, Any] | None = None,
    raw: bytes | None = None,
    error: str = "alert backlog 600000 > 500000",
) -> tuple[str, dict[str, Any]]:
    """One alerter DLQ entry with the alerter's fields; returns (entry id, event)."""
    event = event or make_event()
    record: contracts.AlerterDeadLetter = {
        "reason": reason,
        "error": error,
        "attempts": 1,
        "source_id": _source_id(),
        "failed_at": datetime.now(UTC).isoformat(),
        "consumer": "test-alerter",
        "e": raw if raw is not None else orjson.dumps(event),
    }
    return _add(client, contracts.ALERTER_QUEUE, record), event


def _source_id() -> bytes:
    """An entry id of the stream the entry failed in, as Redis makes them."""
    return f"{int(time.time() * 1000)}-0".encode()


def _add(client: Any, queue: str, record: Mapping[str, object]) -> str:
    return client.xadd(streams.dlq_stream(queue), dict(record)).decode()


def stream_payloads(client: Any, stream: str) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"e"]) for _, fields in client.xrange(stream)]


# --- a local HTTP server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class LocalHTTPServer:
    """Records every request; answers ``responses[path]`` = (status, body, delay seconds), default 200 ``{}``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.responses: dict[str, tuple[int, bytes, float]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append(Recorded(self.command, path, dict(self.headers.items()), body))
                    status, answer, delay = server.responses.get(path, (200, b"{}", 0.0))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="local-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def respond(self, path: str, status: int, body: bytes = b"{}", delay: float = 0.0) -> None:
        with self._lock:
            self.responses[path] = (status, body, delay)

    def to(self, path: str, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def __enter__(self) -> LocalHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
