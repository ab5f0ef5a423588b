"""Ingest admission when Redis runs the script but its reply is lost.

The script is not sent again: a lost reply is an error (the request is answered 503), and the events
the script queued are queued once. So nothing is lost; a sender that retries after that 503 queues
the events again under new event ids (the README says so), which is the one way a duplicate alert can
arise at ingest.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import orjson
import pytest
import redis

from core import streams
from core.audit import Actor
from ingest import ratelimit
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, EventAuditLog
from tests.support.events import make_event, read_stream


class ReplyLosingProxy:
    """Relays a Redis connection; the first time a client sends EVALSHA, Redis gets the call and runs
    it, but the client's connection is closed before the reply reaches it."""

    def __init__(self, upstream: dict, folder: Path) -> None:
        self.upstream = upstream
        if "path" in upstream:
            self.address: str | tuple[str, int] = str(folder / "proxy.sock")
            self.listener = socket.socket(socket.AF_UNIX)
        else:
            self.address = ("127.0.0.1", 0)
            self.listener = socket.socket(socket.AF_INET)
        self.listener.bind(self.address)
        self.listener.listen()
        if not isinstance(self.address, str):
            self.address = self.listener.getsockname()
        self.lost_replies = 0
        self.scripts_relayed = 0  # EVALSHA calls that reached Redis
        threading.Thread(target=self._accept, daemon=True).start()

    def client_kwargs(self) -> dict:
        if isinstance(self.address, str):
            return {"path": self.address}
        return {"host": self.address[0], "port": self.address[1]}

    def _connect_upstream(self) -> socket.socket:
        if "path" in self.upstream:
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.upstream["path"])
            return upstream
        return socket.create_connection((self.upstream["host"], self.upstream["port"]))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client, self._connect_upstream()), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        script_sent = threading.Event()

        def replies() -> None:
            # The client is synchronous: once it has sent EVALSHA, what comes back is that call's reply.
            while data := _recv(upstream):
                if script_sent.is_set() and self.lost_replies == 0:
                    self.lost_replies += 1
                    break  # the script ran; its reply dies with both connections
                client.sendall(data)
            _shut(client, upstream)

        threading.Thread(target=replies, daemon=True).start()
        while data := _recv(client):
            if b"EVALSHA" in data:
                self.scripts_relayed += 1
                script_sent.set()
            upstream.sendall(data)
        _shut(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def proxy(redis_client, tmp_path_factory):
    upstream = redis_client.connection_pool.connection_kwargs
    # A short folder: a Unix socket path must stay under ~107 bytes.
    server = ReplyLosingProxy(upstream, tmp_path_factory.mktemp("p", numbered=True))
    yield server
    server.close()


@pytest.mark.django_db(transaction=True)
def test_a_lost_script_reply_is_an_error_and_the_events_are_queued_once(redis_client, clean_pipeline, proxy):
    services.create(
        AlertRule, actor=Actor.cli("ops"), name="down", match_type="contains", match_string="changed state to down"
    )
    pool = redis_client.connection_pool
    through_proxy = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **{**pool.connection_kwargs, **proxy.client_kwargs()}
        )
    )
    redis_client.script_load(ratelimit._SCRIPT)  # so the call that loses its reply is one that runs
    event = make_event()
    limits = ratelimit.Limits(global_rate=10_000, key_rate=10_000, max_depth=1_000_000)
    try:
        with pytest.raises(redis.ConnectionError):  # ingest answers 503 "Redis unavailable"
            ratelimit.admit(through_proxy, rate_key="lost-reply", payloads=[orjson.dumps(event)], limits=limits)
    finally:
        through_proxy.close()

    assert (proxy.lost_replies, proxy.scripts_relayed) == (1, 1), "the script ran once and was not sent again"
    queued = read_stream(redis_client, streams.ingest_stream())
    assert [e["event_id"] for e in queued] == [event["event_id"]], "queued once: nothing lost, nothing doubled"

    alerter = Alerter("after-lost-reply")
    while alerter.step(block_ms=0):
        pass
    assert EventAuditLog.objects.filter(event_id=event["event_id"]).count() == 1
    assert [a["event_id"] for a in read_stream(redis_client, streams.alerts_stream())] == [event["event_id"]]
