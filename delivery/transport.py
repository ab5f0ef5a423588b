"""Keep-alive HTTP(S) POSTs to Moogsoft: one write per request, a small reader for the answer.

The forwarder needs little from HTTP: one connection per destination, reused while the server keeps it
open, no redirects and no retries of its own (retries are the forwarder's: scheduled and counted).
urllib3's pool manager did that at about three times the CPU per request of this module, which was
more than everything else the forwarder does for a one-alert request (``http.client`` alone parses the
answer's headers with the email package and writes headers and body in two packets, waking the server
twice). Here the request is one ``sendall`` and the answer is read by :func:`_read_response`: status
line, headers, then a body delimited by Content-Length, chunked encoding or the end of the connection;
interim 1xx answers are skipped.

A kept-alive connection that the server has closed meanwhile (its idle timeout) is noticed before the
request and reopened instead of failing it (only a close that crosses the request itself fails it, as
with any client). Any error on a connection closes it; the next request opens a new one. HTTPS
verifies certificates and host names against the system's trust store (the default ``ssl`` context).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from io import BufferedReader
from typing import Any
from urllib.parse import urlsplit

MAX_LINE = 65536  # status or header line, as http.client's limit
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024  # an answer is a small JSON document; more is a broken server
_FORBIDDEN_IN_HEADERS = frozenset("\r\n\0")


class TransportError(Exception):
    """A request that got no HTTP answer. ``reason``: ``timeout`` (connect or read) or ``connection_error``."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.reason = reason


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this reader understands it (or the connection ended early)."""


class Headers(dict[str, str]):
    """Answer headers by lower-case name (repeated ones joined with ", "), found in any case."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@dataclass(slots=True)
class Response:
    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port: one connection each
    request_line: bytes  # "POST <path?query> HTTP/1.1" and the Host header


@dataclass
class _Connection:
    sock: socket.socket
    reader: BufferedReader
    readable: select.poll  # the socket registered for POLLIN: has the server closed it while idle?

    def dropped(self) -> bool:
        """An idle kept-alive socket that is readable has been closed by the server (or holds stray
        bytes). poll, not select: select fails for descriptors above 1023."""
        try:
            return bool(self.readable.poll(0))
        except OSError:
            return True


class Transport:
    """Posts over one kept-alive connection per origin. One thread uses an instance at a time."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str, int], _Connection] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None
        self._last_headers: Mapping[str, str] | None = None
        self._last_block = b""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float, connect_timeout: float
    ) -> Response:
        """POST ``body``; any HTTP status is a Response, no answer at all is a TransportError."""
        try:
            target = self._target(url)
            request = b"%sContent-Length: %d\r\n%s%s" % (target.request_line, len(body), self._headers(headers), body)
        except ValueError as exc:  # a URL or header that cannot be sent: no answer, as for a bad host
            raise TransportError("connection_error", exc) from exc
        try:
            connection = self._connect(target.origin, connect_timeout)
            connection.sock.settimeout(timeout)
            connection.sock.sendall(request)
            status, answer_headers, answer, will_close = _read_response(connection.reader)
        except (OSError, ProtocolError) as exc:
            self._close(target.origin)
            raise TransportError("timeout" if isinstance(exc, TimeoutError) else "connection_error", exc) from exc
        if will_close:
            self._close(target.origin)
        return Response(status, answer_headers, answer)

    def close(self) -> None:
        for origin in list(self._connections):
            self._close(origin)

    def _headers(self, headers: Mapping[str, str]) -> bytes:
        """The header block, encoded again only when the caller passes another mapping (a forwarder
        passes the same one for a while)."""
        if headers is not self._last_headers:
            self._last_block = _header_block(headers)
            self._last_headers = headers
        return self._last_block

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
            default_port = 443 if parts.scheme == "https" else 80
            port = parts.port or default_port
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            authority = host if port == default_port else f"{host}:{port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if " " in path:
                raise ValueError("the URL's path contains a space")
            line = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n"
            _check_header_text(line.removesuffix("\r\n").replace("\r\n", " "))
            target = _Target((parts.scheme, parts.hostname, port), line.encode("ascii"))
            if len(self._targets) > 100:  # the URL is a setting: remember only a few
                self._targets.clear()
            self._targets[url] = target
        return target

    def _connect(self, origin: tuple[str, str, int], connect_timeout: float) -> _Connection:
        connection = self._connections.get(origin)
        if connection is not None and connection.dropped():
            self._close(origin)
            connection = None
        if connection is None:
            scheme, host, port = origin
            sock = socket.create_connection((host, port), timeout=connect_timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    self._tls = self._tls or ssl.create_default_context()
                    sock = self._tls.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
            readable = select.poll()
            readable.register(sock, select.POLLIN)
            connection = _Connection(sock, sock.makefile("rb"), readable)
            self._connections[origin] = connection
        return connection

    def _close(self, origin: tuple[str, str, int]) -> None:
        connection = self._connections.pop(origin, None)
        if connection is not None:
            connection.reader.close()
            connection.sock.close()


def _header_block(headers: Mapping[str, str]) -> bytes:
    """The caller's headers as sent after Host and Content-Length, through the empty line that ends
    them; the answer is asked for uncompressed unless the caller says otherwise."""
    lines = []
    names = set()
    for name, value in headers.items():
        if ":" in name or not name.strip():
            raise ValueError(f"invalid header name {name!r}")
        names.add(name.lower())
        if name.lower() not in ("content-length", "host"):
            lines.append(f"{name}: {value}\r\n")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity\r\n")
    text = "".join(lines)
    _check_header_text(text.replace("\r\n", " "))
    return text.encode("latin-1") + b"\r\n"


def _check_header_text(text: str) -> None:
    """No header may carry a line break or NUL (it would smuggle in another header or request)."""
    if not _FORBIDDEN_IN_HEADERS.isdisjoint(text):
        raise ValueError("a header or the URL contains a line break or NUL")


# --- reading the answer ---------------------------------------------------------------------------


def _read_response(reader: BufferedReader) -> tuple[int, Headers, bytes, bool]:
    """(status, headers, body, whether the server closes the connection) of the next answer."""
    version, status = _status_line(reader)
    headers = _headers(reader)
    while 100 <= status < 200:  # interim answers (100 Continue): the final one follows
        version, status = _status_line(reader)
        headers = _headers(reader)
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if status in (204, 304):
        return status, headers, b"", will_close
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, _chunked_body(reader), will_close
    length = headers.get("content-length")
    if length is None:  # delimited by the end of the connection
        return status, headers, _read_exactly(reader, None), True
    if not length.strip().isdigit():
        raise ProtocolError(f"bad Content-Length {length[:40]!r}")
    return status, headers, _read_exactly(reader, int(length)), will_close


def _status_line(reader: BufferedReader) -> tuple[str, int]:
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ProtocolError("the server closed the connection without an answer")
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return version, int(code)


def _headers(reader: BufferedReader) -> Headers:
    headers = Headers()
    for line in _header_lines(reader):
        name, colon, value = line.decode("latin-1").partition(":")
        if colon:
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _header_lines(reader: BufferedReader) -> list[bytes]:
    """The header lines, without line ends, up to the empty line that ends them (consumed too)."""
    buffered = reader.peek(1)
    if buffered.startswith((b"\r\n", b"\n")):  # no headers at all
        reader.readline()
        return []
    end = buffered.find(b"\r\n\r\n")
    # Usually the whole head is already buffered: one read and one split instead of a readline per
    # header. Only when every line of it ends in CRLF, or a bare-LF head could end earlier.
    if end >= 0 and buffered.count(b"\n", 0, end) == buffered.count(b"\r\n", 0, end):
        lines = reader.read(end + 4)[:end].split(b"\r\n")
        if len(lines) > MAX_HEADERS:
            raise ProtocolError("too many headers")
        return lines
    lines = []
    while True:
        line = reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("header line too long")
        if not line:
            raise ProtocolError("the connection ended inside the headers")
        if line in (b"\r\n", b"\n"):
            return lines
        if len(lines) == MAX_HEADERS:
            raise ProtocolError("too many headers")
        lines.append(line.rstrip(b"\r\n"))


def _chunked_body(reader: BufferedReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = reader.readline(MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            while reader.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ProtocolError("answer body too large")
        chunks.append(_read_exactly(reader, size))
        reader.readline(MAX_LINE + 1)  # the line end after each chunk


def _read_exactly(reader: BufferedReader, size: int | None) -> bytes:
    """``size`` bytes, or (None) everything until the server closes; a short read is an error."""
    if size is None:
        data = reader.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise ProtocolError("answer body too large")
        return data
    if size > MAX_BODY:
        raise ProtocolError("answer body too large")
    data = reader.read(size)
    if len(data) < size:
        raise ProtocolError(f"the connection ended {size - len(data)} bytes before the end of the body")
    return data
