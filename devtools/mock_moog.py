"""mock_moog: a local stand-in for Moogsoft that records what MUTT sends and fails on request.

It accepts both delivery formats on any path: a REST/Webhook LAM body ``{"events": [...]}``, a Cloud
Events API array ``[...]``, or one event object; records each event with its path, receive time, the
format recognised and the authentication scheme seen (never the credential); and answers
``202 {"accepted": n}``. Malformed JSON gets 400 and is recorded as an error, not as an event.

Reserved paths: ``GET /events`` (``?limit=n``) and ``DELETE /events``; ``GET /errors``; ``GET /health``;
``GET /control`` and ``POST /control`` to inject failures at run time (see docs/mock_moog.md and
:func:`devtools.mock_moog_state.parse_control`).

Plain ``http.server`` (HTTP/1.1 keep-alive, one thread per connection) and orjson: no Django on the
request path, so the mock is never the bottleneck of a delivery benchmark. Tests start
:class:`MockMoog` in a thread on port 0; ``python manage.py mock_moog`` runs it as a process.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import select
import socket
import threading
import time
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from core import exactjson, streams
from devtools.mock_moog_state import ControlError, Decision, MockState

logger = logging.getLogger("mutt.mock_moog")

MAX_BODY_BYTES = 32 * 1024 * 1024
# Request head limits, as http.server's own (http.client._MAXLINE, _MAXHEADERS).
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
# A request held by the timeout fault is let go after this long even if its client never gives up.
MAX_HOLD_SECONDS = 600.0
RESERVED_PATHS = frozenset({"/control", "/health", "/errors"})
_JSON = "application/json"
_date_cache: tuple[int, str] = (0, "")  # (epoch second, its Date header): replaced whole, never mutated


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a benchmark opens many connections at once

    def __init__(self, address: tuple[str, int], mock: MockMoog) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.mock = mock
        super().__init__(address, _Handler)


class MockMoog:
    """The mock server: ``start()`` serves in a background thread, ``close()`` stops it and its connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_events: int = 100_000) -> None:
        self.state = MockState(max_events=max_events)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._closed = False
        self.server = _Server((host, port), self)

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MockMoog:
        self._thread = threading.Thread(target=self.serve_forever, name=f"mock-moog-{self.port}", daemon=True)
        self._thread.start()
        self._serving.wait(5)
        return self

    def serve_forever(self) -> None:
        self._serving.set()
        self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop accepting, let held requests go, close open connections, and free the port."""
        if self._closed:
            return
        self._closed = True
        if self._serving.is_set():
            self.server.shutdown()  # returns once serve_forever has stopped
        self.state.release_all()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # Wakes handler threads blocked reading the next keep-alive request.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MockMoog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- in-process access (tests of other components) ----------------------------------------

    def events(self) -> list[dict[str, Any]]:
        return self.state.snapshot()[1]

    def configure(self, **control: Any) -> dict[str, Any]:
        return self.state.configure(control).public()

    def reset(self) -> None:
        self.state.clear_events()
        self.state.configure({"reset": True})

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Headers(dict[str, str]):
    """Request headers by lower-case name (the first of a repeated header wins), found in any case."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a forwarder reuses its connections
    server_version = "mock_moog/1"
    disable_nagle_algorithm = True
    # Buffered writes: headers and body leave in one segment (flushed after each request).
    wbufsize = 64 * 1024
    timeout = 300  # an idle keep-alive connection is closed after this long
    raw_requestline: bytes  # set by handle_one_request before parse_request (typeshed does not declare it)
    server: _Server

    @property
    def mock(self) -> MockMoog:
        return self.server.mock

    @property
    def state(self) -> MockState:
        return self.server.mock.state

    def setup(self) -> None:
        super().setup()
        self.mock._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.mock._track(self.connection, add=False)

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, formatted once a second rather than for every answer."""
        global _date_cache
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        if _date_cache[0] != second:
            _date_cache = (second, super().date_time_string(second))
        return _date_cache[1]

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):  # called for every answer: format nothing unless logged
            logger.debug("%s %s", self.address_string(), format % args)

    def parse_request(self) -> bool:
        """The request line and headers, checked as http.server checks them, with a light header reader.

        http.server hands the head to the email package's parser, which was half the mock's time per
        request. HTTP/0.9 requests and folded header lines, which no client of ours sends, are refused
        and ignored. On failure the error answer has been sent and False is returned.
        """
        self.command = ""  # no command parsed yet (http.server's None, typed as the str it becomes)
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if not self._parse_request_line():
            return False
        headers = self._read_headers()
        if headers is None:
            return False
        self.headers = headers  # type: ignore[assignment]  # used through .get() only
        connection = headers.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if headers.get("expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _parse_request_line(self) -> bool:
        words = self.requestline.split()
        if not words:
            return False
        number = _http_version(words[-1]) if len(words) >= 3 else (0, 9)
        if number is None:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({words[-1]!r})")
            return False
        if number >= (2, 0):
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({words[-1][5:]})")
            return False
        if len(words) >= 3:
            self.request_version = words[-1]  # so that an error below is answered with a status line
        if len(words) != 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({self.requestline!r})")
            return False
        self.command, path, self.request_version = words
        self.close_connection = number < (1, 1)
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path  # as http.server: no "//host"
        return True

    def _read_headers(self) -> _Headers | None:
        headers = _Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return None
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if colon:
                headers.setdefault(name.strip().lower(), value.strip())
        self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
        return None

    # --- routing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            status = self.state.health_status()
            self._send(status, {"status": "ok" if status < 400 else "unavailable"})
        elif url.path == "/events":
            self._get_events(parse_qs(url.query))
        elif url.path == "/errors":
            count, errors = self.state.error_snapshot()
            self._send(200, {"count": count, "errors": errors})
        elif url.path == "/control":
            self._send(200, self.state.status())
        else:
            self._send(404, {"error": f"no such resource {url.path}"})

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path != "/events":
            self._send(404, {"error": "only /events can be deleted"})
            return
        self._send(200, {"deleted": self.state.clear_events()})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        if path == "/control":
            self._control(body)
        elif path in RESERVED_PATHS:
            self._send(405, {"error": f"POST is not allowed on {path}"})
        else:
            self._post_events(path, body)

    # --- handlers -----------------------------------------------------------------------------

    def _get_events(self, query: dict[str, list[str]]) -> None:
        limit = None
        if "limit" in query:
            try:
                limit = max(0, int(query["limit"][0]))
            except ValueError:
                self._send(400, {"error": "limit must be a whole number"})
                return
        count, events = self.state.snapshot(limit)
        self._send(200, {"count": count, "events": events})

    def _control(self, body: bytes) -> None:
        try:
            mode = self.state.configure(orjson.loads(body) if body else {})
        except orjson.JSONDecodeError as exc:
            self._send(400, {"error": f"malformed JSON: {exc}"})
            return
        except ControlError as exc:
            self._send(400, {"error": str(exc)})
            return
        logger.info("mock_moog mode changed", extra={"mode": mode.public()})
        self._send(200, {"mode": mode.public()})

    def _post_events(self, path: str, body: bytes) -> None:
        request_number, decision = self.state.decide()
        if decision.latency_ms:
            time.sleep(decision.latency_ms / 1000)
        if decision.fault == "drop":
            self.state.count_answer("dropped")
            self.close_connection = True  # closed without a byte of answer
            return
        if decision.fault == "timeout":
            self._hold(decision)
            return
        if decision.require_auth is not None and not _authorised(self.headers, decision.require_auth):
            self._answer(401, {"error": "authentication failed"})
            return
        if decision.fault == "status" and decision.status is not None:
            headers = {"Retry-After": str(decision.retry_after)} if decision.retry_after is not None else {}
            self._answer(decision.status, {"error": "failure injected by mock_moog control"}, headers)
            return
        received_at = datetime.now(UTC).isoformat(timespec="microseconds")
        try:
            payload = exactjson.loads(body)  # an alert's varbinds may hold an integer past 64 bits: kept exact
            fmt, events = _recognise(payload)
        except (orjson.JSONDecodeError, ValueError) as exc:
            error = f"malformed JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            self.state.record_error(
                {"path": path, "received_at": received_at, "error": error, "body": body[:1000].decode(errors="replace")}
            )
            self._answer(400, {"error": error})
            return
        auth = _auth_scheme(self.headers)
        self.state.record_events(
            [
                {
                    "request": request_number,
                    "path": path,
                    "received_at": received_at,
                    "format": fmt,
                    "auth": auth,
                    "event": event,
                }
                for event in events
            ]
        )
        self._answer(202, {"accepted": len(events)})

    def _hold(self, decision: Decision) -> None:
        """Never answer: wait until the client closes the connection (or a reset or shutdown lets go)."""
        self.state.count_answer("timed_out")
        release = decision.release or threading.Event()
        deadline = time.monotonic() + MAX_HOLD_SECONDS
        self.close_connection = True
        while not release.is_set() and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0.1)
                # Readable with nothing to read: the client hung up.
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return
            except OSError:
                return
            if readable:
                release.wait(0.1)  # the client sent more (a pipelined request): keep ignoring it

    # --- I/O ----------------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._send(400, {"error": "bad Content-Length"})
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                self._send(400, {"error": "bad chunked encoding"})
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)  # the CRLF after each chunk

    def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        """Answer an event post and count the answer by status."""
        self.state.count_answer(status)
        self._send(status, payload, headers)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = streams.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", _JSON)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


# --- body and header helpers ----------------------------------------------------------------------


def _http_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of ``HTTP/x.y`` as http.server reads it, or None when it is not one."""
    if not version.startswith("HTTP/"):
        return None
    major, dot, minor = version[5:].partition(".")
    if not dot or not (major.isdigit() and minor.isdigit()) or max(len(major), len(minor)) > 10:
        return None
    return int(major), int(minor)


def _recognise(payload: Any) -> tuple[str, list[dict[str, Any]]]:
    """The format of a body and its events: webhook ``{"events": [...]}``, events_api ``[...]``, or single."""
    if isinstance(payload, list):
        fmt, events = "events_api", payload
    elif isinstance(payload, dict) and "events" in payload:
        fmt, events = "webhook", payload["events"]
        if not isinstance(events, list):
            raise ValueError('"events" must be a JSON array')
    elif isinstance(payload, dict):
        fmt, events = "single", [payload]
    else:
        raise ValueError("the body must be a JSON object or array")
    if not all(isinstance(event, dict) for event in events):
        raise ValueError("every event must be a JSON object")
    return fmt, events


def _auth_scheme(headers: Any) -> str | None:
    """Which credential the request carried (``apiKey``, ``basic``, ``bearer`` ...), never its value."""
    if headers.get("apiKey"):
        return "apiKey"
    authorization = headers.get("Authorization") or ""
    return authorization.split(" ", 1)[0].lower() or None


def _authorised(headers: Any, expected: str) -> bool:
    """True if the request carries ``expected`` as apiKey, Bearer token, or Basic ``user:password`` / password."""
    if headers.get("apiKey") == expected:
        return True
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() == expected
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return expected in (decoded, decoded.partition(":")[2])
    return False
