"""Redis connections and key names.

Every key, stream and channel name comes from :func:`key`, which puts the deployment prefix
(``MUTT_REDIS_PREFIX``) in front, so deployments and test runs can share one Redis and names can
later carry hash tags for Redis Cluster.

Connections authenticate with the ``REDIS_PASSWORD`` credential when it has a value (CURRENT, then
NEXT when Redis rejects it; see :mod:`core.rotation`), and with the password in ``REDIS_URL``
otherwise. Redis checks a password only when a connection authenticates, so a password change on the
server leaves pooled connections working; only new connections need the new value, and that is where
the rotation hooks in.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

from core.rotation import connect_with_credential

CREDENTIAL = "REDIS_PASSWORD"

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def key(*parts: str | int) -> str:
    """``key("stream", "ingest")`` -> ``"mutt:stream:ingest"`` (with the configured prefix)."""
    return ":".join([settings.MUTT_REDIS_PREFIX, *(str(part) for part in parts)])


def get_redis() -> redis.Redis:
    """A shared, thread-safe client (its pool) for ``settings.REDIS_URL``."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                pool = RotatingConnectionPool.from_url(
                    url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
                )
                client = redis.Redis.from_pool(pool)
                _clients[url] = client
    return client


def reset_clients() -> None:
    """Drop pooled connections (when the URL changes; a forked child gets new clients by itself)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is in requirements.txt
    _pack_command = None


def packed(connection: Any, command: tuple[Any, ...]) -> list[bytes]:
    """``command`` in the Redis protocol: hiredis packs str, bytes, int and float as redis-py does, without
    redis-py's per-argument checks; anything else goes through redis-py (which says what it refuses)."""
    if _pack_command is not None:
        try:
            return [_pack_command(command)]
        except TypeError:
            pass
    return connection.pack_command(*command)


def evalsha_on(connection: Any, sha: str, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """EVALSHA on a connection the caller holds (outside redis-py's per-command path, for hot paths);
    loads the script once if Redis does not know it (restarted, or its scripts flushed).

    No retry here: the caller decides whether a script that may have run can run again.
    """
    command = ("EVALSHA", sha, len(keys), *keys, *args)
    connection.send_packed_command(packed(connection, command))
    return read_evalsha_reply(connection, script, command)


def read_evalsha_reply(connection: Any, script: str, command: tuple[Any, ...]) -> Any:
    """The reply to ``command`` (an EVALSHA of ``script``) sent on ``connection``; if Redis did not know
    the script (so it did not run), load it and send the command again. The connection must have no
    other reply outstanding."""
    try:
        return connection.read_response()
    except redis.exceptions.NoScriptError:
        connection.send_command("SCRIPT", "LOAD", script)
        connection.read_response()
        connection.send_packed_command(packed(connection, command))
        return connection.read_response()


class DeferredCommand:
    """A command sent on a connection of its own, its reply read later: ``send`` it, do other work while
    Redis runs it, then take its ``result``: the reply as Redis gave it (hiredis's lists and bytes; no
    redis-py response callback). One call in flight at a time.

    A connection error disconnects the connection (the next ``send`` opens a new one) and is raised,
    with no retry: whether a command that may have run can run again is the caller's to decide. A kept
    connection Redis closed while it was idle (a restart, an outage) is replaced before the next ``send``,
    as the pool checks the connections it hands out: the call goes to the Redis that is there now.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None
        self._sent: tuple[Any, ...] | None = None

    @property
    def in_flight(self) -> bool:
        return self._sent is not None

    def send(self, *command: Any) -> None:
        if self._sent is not None:
            raise RuntimeError("the previous call's result was not taken")
        if self._connection is None:
            self._connection = self._pool.get_connection()
        try:
            self._reconnect_if_closed()
            self._connection.send_packed_command(packed(self._connection, command))
        except (redis.ConnectionError, redis.TimeoutError):
            self._connection.disconnect()
            raise
        self._sent = command

    def _reconnect_if_closed(self) -> None:
        """Open the kept connection again if Redis closed it since its last reply (one poll of the socket).

        Without this, the first call after Redis restarted failed on the old socket ("Broken pipe", or a
        reset over TCP) although Redis was back: the outage was logged as over (by whatever call saw Redis
        back first, often another thread's) and at once as begun again, and a batch whose finishing script
        failed so waited for the claim timeout. Costs one poll() per call, not a round trip.
        """
        connection = self._connection
        connection.connect()  # a no-op when connected; after an error, the new connection a send would open
        try:
            # With no reply outstanding, anything readable is Redis's end of the connection (or a stale reply).
            closed = connection.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            closed = True
        if closed:
            connection.disconnect()
            connection.connect()

    def result(self) -> Any:
        if self._sent is None:
            raise RuntimeError("nothing was sent")
        command, self._sent = self._sent, None
        try:
            return self._read(command)
        except (redis.ConnectionError, redis.TimeoutError):
            self._connection.disconnect()
            raise

    def _read(self, command: tuple[Any, ...]) -> Any:
        return self._connection.read_response()

    def run(self, *command: Any) -> Any:
        """Send and take the result at once: one call on the kept connection, without redis-py's
        per-command pool checkout."""
        self.send(*command)
        return self.result()

    def close(self) -> None:
        """Give the connection back to the pool (a call still in flight is left to finish in Redis)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._sent is not None:
            self._sent = None
            connection.disconnect()  # its reply would be read by whoever takes the connection next
        self._pool.release(connection)


class DeferredScript:
    """A Lua script run as a ``DeferredCommand`` (EVALSHA, loading the script when Redis does not know it)."""

    def __init__(self, client: redis.Redis, script: str) -> None:
        self._script = client.register_script(script)
        self._command = _ScriptCommand(client, self._script.script)

    @property
    def in_flight(self) -> bool:
        return self._command.in_flight

    def send(self, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self._command.send("EVALSHA", self._script.sha, len(keys), *keys, *args)

    def result(self) -> Any:
        return self._command.result()

    def run(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        self.send(keys, args)
        return self.result()

    def close(self) -> None:
        self._command.close()


class _ScriptCommand(DeferredCommand):
    def __init__(self, client: redis.Redis, script: str) -> None:
        super().__init__(client)
        self._script = script

    def _read(self, command: tuple[Any, ...]) -> Any:
        return read_evalsha_reply(self._connection, self._script, command)


# --- fork safety ----------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """Give a forked child its own clients, and make those handed out before the fork safe to use.

    Another thread of the parent (the settings subscriber, typically) may have been inside redis-py
    at the moment of the fork, holding a pool's lock: the child inherits it locked, with no thread to
    release it. redis-py notices the fork on the next command and resets the pool, but to do so it
    takes that very lock, without a timeout, and the child would wait forever.
    """
    global _lock, _clients
    inherited = _clients
    _lock = threading.Lock()
    _clients = {}
    for client in inherited.values():
        _disown_parent_state(client)


def _disown_parent_state(client: redis.Redis) -> None:
    # For code that kept a reference to a client created before the fork. The pool forgets the
    # parent's connections without closing them (their sockets are the parent's; redis-py only closes
    # the child's copy of the descriptor when it drops them) and opens its own when next used.
    pool = client.connection_pool
    pool._fork_lock = threading.RLock()
    pool._lock = threading.RLock()
    for dispatcher in (getattr(pool, "_event_dispatcher", None), getattr(client, "_event_dispatcher", None)):
        if dispatcher is not None:
            dispatcher._lock = threading.RLock()
    pool.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- authentication with a rotating password ----------------------------------------------------


class _RotatingPassword:
    """Mixin for redis-py connection classes: authenticate with the REDIS_PASSWORD credential."""

    password: str | None
    _sock: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._url_password = self.password

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        open_connection = super().connect_check_health

        def attempt(password: str | None) -> None:
            # Each attempt is a new socket and a complete handshake (AUTH or HELLO, CLIENT SETINFO,
            # SELECT): redis-py closes the socket when the handshake fails, so a rejected password
            # leaves nothing half-authenticated behind.
            self.password = self._url_password if password is None else password
            open_connection(check_health=check_health, retry_socket_connect=retry_socket_connect)

        connect_with_credential(CREDENTIAL, attempt, is_rejection=_is_rejection)


def _is_rejection(error: BaseException) -> bool:
    return isinstance(error, redis.AuthenticationError)


class RotatingConnection(_RotatingPassword, Connection):
    """TCP (``redis://``)."""


class RotatingSSLConnection(_RotatingPassword, SSLConnection):
    """TLS (``rediss://``)."""


class RotatingUnixDomainSocketConnection(_RotatingPassword, UnixDomainSocketConnection):
    """Unix socket (``unix://``)."""


_CONNECTION_CLASSES: dict[str, type[Connection] | type[UnixDomainSocketConnection]] = {
    "redis": RotatingConnection,
    "rediss": RotatingSSLConnection,
    "unix": RotatingUnixDomainSocketConnection,
}


class RotatingConnectionPool(redis.ConnectionPool):
    """A connection pool whose connections use the rotating credential, for any Redis URL.

    Usable wherever a pool class is named by its dotted path, e.g. django-redis's
    ``OPTIONS["CONNECTION_POOL_CLASS"]``.
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RotatingConnectionPool:
        kwargs.setdefault("connection_class", _CONNECTION_CLASSES[urlsplit(url).scheme])
        return super().from_url(url, **kwargs)
