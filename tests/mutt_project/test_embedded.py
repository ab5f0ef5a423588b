"""Embedded PostgreSQL and Redis: start, reuse, stop, and short sockets for long folders."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis

from mutt_project import embedded


def long_folder(tmp_path: Path) -> Path:
    folder = tmp_path / ("a-rather-long-folder-name-" * 4) / "data"
    assert len(str(folder / "pg" / ".s.PGSQL.5432")) > 107
    return folder


def test_socket_paths_are_a_pure_function_of_the_folder(tmp_path):
    short = tmp_path / "d"
    assert embedded.pg_socket_dir(short) == short / "pg"
    assert embedded.redis_socket_path(short) == short / "redis" / "redis.sock"
    folder = long_folder(tmp_path)
    assert len(str(embedded.pg_socket_dir(folder) / ".s.PGSQL.5432")) <= 100
    assert len(str(embedded.redis_socket_path(folder))) <= 100
    assert embedded.pg_socket_dir(folder) == embedded.pg_socket_dir(folder)
    assert embedded.pg_socket_dir(folder) != embedded.pg_socket_dir(tmp_path / "other" / ("x" * 100))


def test_start_reuse_and_stop_real_servers_even_in_a_long_folder(private_tmp):
    folder = long_folder(private_tmp)
    started = embedded.start(folder, durable=False)
    try:
        assert (started.postgres, started.redis) == (True, True)
        postmaster = embedded._postmaster_pid(embedded.pg_data_dir(folder))
        redis_pid = embedded._redis_pid(folder)
        assert postmaster
        assert redis_pid

        again = embedded.start(folder, durable=False)
        assert (again.postgres, again.redis) == (False, False), "a running server for the folder is reused"
        assert embedded._postmaster_pid(embedded.pg_data_dir(folder)) == postmaster

        conn = psycopg2.connect(dbname="mutt", user="postgres", host=str(embedded.pg_socket_dir(folder)))
        with conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("mutt",)
        conn.close()
        client = redis.Redis.from_url(embedded.redis_url(folder))
        assert client.ping()
        client.close()
    finally:
        embedded.stop(folder)
    assert not psutil.pid_exists(postmaster)
    assert not psutil.pid_exists(redis_pid)
    assert embedded.status(folder)["postgres"]["running"] is False
    assert embedded.status(folder)["redis"]["running"] is False


def test_stop_is_a_no_op_when_nothing_runs(tmp_path):
    embedded.stop(tmp_path / "never-started")
    assert embedded.status(tmp_path / "never-started")["postgres"]["running"] is False


def test_only_the_requested_service_is_started(private_tmp):
    started = embedded.start(private_tmp / "redis-only", postgres=False, durable=False)
    try:
        assert (started.postgres, started.redis) == (False, True)
        assert not (private_tmp / "redis-only" / "pg").exists()
    finally:
        embedded.stop(private_tmp / "redis-only")


def group_or_other_accessible(*roots: Path) -> list[str]:
    """Every path under ``roots`` (symlinks aside) that grants its group or others any permission."""
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{stat.filemode(mode)} {path}")
    return found


def test_embedded_data_is_owner_only_even_in_a_folder_an_older_version_left_readable(private_tmp):
    folder = long_folder(private_tmp)  # sockets in their own folders under the temp dir: checked too
    roots = [
        embedded.pg_data_dir(folder),
        embedded.pg_socket_dir(folder),
        embedded.redis_dir(folder),
        embedded.redis_socket_path(folder).parent,
    ]
    embedded.start(folder, durable=True)
    try:
        client = redis.Redis.from_url(embedded.redis_url(folder))
        client.xadd("owner-only-check", {"event": "queued"})  # written to the append-only file
        client.close()
        aof = embedded.redis_dir(folder) / "appendonly.aof"
        assert aof.exists()
        assert group_or_other_accessible(*roots) == []
    finally:
        embedded.stop(folder)

    # A folder from before: everything readable by everyone. The next start closes it again.
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
    assert str(aof) in "\n".join(group_or_other_accessible(*roots))
    embedded.start(folder, durable=True)
    try:
        assert group_or_other_accessible(*roots) == []
        client = redis.Redis.from_url(embedded.redis_url(folder))
        assert client.xlen("owner-only-check") == 1, "the data survived the restart"
        client.close()
    finally:
        embedded.stop(folder)
    assert group_or_other_accessible(*roots) == []


def test_a_postmaster_pid_file_naming_another_live_process_is_not_taken_for_the_server(tmp_path):
    """After a crash or a reboot the recorded pid may be any process: it is neither reused nor signalled."""
    folder = tmp_path / "data"
    pgdata = embedded.pg_data_dir(folder)
    pgdata.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        (pgdata / "postmaster.pid").write_text(f"{other.pid}\n{pgdata}\n")
        (embedded.pg_socket_dir(folder) / ".s.PGSQL.5432").touch()
        assert embedded.postgres_pid(folder) is None
        assert embedded.postgres_running(folder) is False
        assert embedded.status(folder)["postgres"]["running"] is False
        embedded.stop(folder, redis=False)
        assert other.poll() is None, "stopping the embedded PostgreSQL does not signal an unrelated process"
    finally:
        other.kill()
        other.wait()


def test_a_start_right_after_a_crash_waits_for_the_old_servers_processes_to_exit(private_tmp):
    """`make run` at once after a crash: the killed postmaster's backends are still exiting; the start waits."""
    folder = private_tmp / "data"
    embedded.start(folder, redis=False, durable=False)
    pgdata = embedded.pg_data_dir(folder)
    postmaster = psutil.Process(embedded.postgres_pid(folder))
    lingering = postmaster.children()[0]
    lingering.suspend()  # it cannot notice its postmaster's death (and exit) until resumed
    postmaster.kill()
    try:
        assert wait_for(lambda: embedded.postgres_pid(folder) is None)
        assert embedded._cluster_processes(pgdata) == [lingering.pid]
        threading.Timer(1.5, lingering.kill).start()  # it exits a moment later
        started = embedded.start(folder, redis=False, durable=False)
        assert started.postgres
        assert embedded.postgres_running(folder)
        conn = psycopg2.connect(dbname="mutt", user="postgres", host=str(embedded.pg_socket_dir(folder)))
        conn.close()
    finally:
        with contextlib.suppress(psutil.Error):
            lingering.kill()
        embedded.stop(folder)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_waiting_for_another_process_starting_the_services_is_bounded(tmp_path):
    """A hung `mutt services start` (holding the folder's lock) cannot hang a `mutt up` restart for ever."""
    folder = tmp_path / "data"
    folder.mkdir()
    holder = os.open(folder / ".embedded.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        began = time.monotonic()
        with pytest.raises(embedded.EmbeddedError, match="another process has been starting or stopping"):
            embedded.start(folder, postgres=False, lock_timeout=0.5)
        assert time.monotonic() - began < 5
        assert not (folder / "redis").exists(), "nothing was started"
    finally:
        os.close(holder)
