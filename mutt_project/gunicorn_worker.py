"""gunicorn's threaded worker with deadlines for reading a request, which gunicorn itself does not bound.

``gthread`` answers requests from a pool of threads and parks idle kept-alive connections in a poller,
so a slow client holds one thread, not the whole worker (the sync worker it replaces was one request at a
time: two slowloris connections stopped the HTTP tier, ADR-004). Two gaps remain in gunicorn, closed here:

- A new connection takes a pool thread at once and holds it up to 5 s waiting for its first byte. Here it
  waits in the poller instead (at most ``keepalive`` seconds, like a kept-alive connection), so idle
  connections cost no thread.
- Once a request's first bytes arrive, gunicorn reads its head and the application its body with blocking
  reads and no deadline: one header line every few seconds holds a thread for as long as the client likes.
  Here the head must arrive within ``MUTT_HTTP_HEADER_TIMEOUT`` seconds of its first byte and the body
  within ``MUTT_HTTP_BODY_TIMEOUT`` seconds of the head; past that the worker closes the reading side of
  the connection. The blocked read then ends (gunicorn drops a half-read head; ingest answers a cut-off
  body with a 400), and an answer already being written still goes out: only reading stops.

This bounds what one slow client costs; it does not make a flood of them free. Production still puts a
buffering reverse proxy in front (README, "Running behind a proxy").
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from core.envparse import env_int

HEADER_TIMEOUT = env_int(os.environ, "MUTT_HTTP_HEADER_TIMEOUT", 10, minimum=1)
BODY_TIMEOUT = env_int(os.environ, "MUTT_HTTP_BODY_TIMEOUT", 30, minimum=1)


class ThreadWorker(GunicornThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections a pool thread is reading from: id(conn) -> (deadline, conn, what is being read).
        self._reading: dict[int, tuple[float, TConn, str]] = {}
        self._reading_lock = threading.Lock()

    def accept(self, listener: Any) -> None:
        """Park a new connection in the poller until it sends something (gunicorn hands it to a thread)."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking from here
        conn.timeout = time.monotonic() + self.cfg.keepalive  # murder_pending closes it if nothing comes
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def handle(self, conn: TConn) -> Any:
        """Serve a request in a pool thread, its head read against ``HEADER_TIMEOUT``."""
        self._watch(conn, HEADER_TIMEOUT, "head")
        try:
            return super().handle(conn)
        finally:
            with self._reading_lock:
                self._reading.pop(id(conn), None)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        """The head is in: the application reads the body against ``BODY_TIMEOUT``."""
        self._watch(conn, BODY_TIMEOUT, "body")
        return super().handle_request(req, conn)

    def _watch(self, conn: TConn, seconds: int, what: str) -> None:
        with self._reading_lock:
            self._reading[id(conn)] = (time.monotonic() + seconds, conn, what)

    def murder_pending(self) -> None:
        """Besides gunicorn's closing of idle connections: stop reading from clients past their deadline.

        Runs on the worker's main thread about once a second (gunicorn's loop), never in a pool thread.
        """
        super().murder_pending()
        now = time.monotonic()
        with self._reading_lock:
            late = [(conn, what) for deadline, conn, what in self._reading.values() if deadline <= now]
            for conn, _ in late:
                del self._reading[id(conn)]
        for conn, what in late:
            with contextlib.suppress(OSError):  # the client may be gone already
                conn.sock.shutdown(socket.SHUT_RD)
            seconds = HEADER_TIMEOUT if what == "head" else BODY_TIMEOUT
            peer = conn.client[0] if isinstance(conn.client, tuple) else conn.client
            self.log.warning("Stopped reading from ip=%s: the request %s took over %s s", peer, what, seconds)
