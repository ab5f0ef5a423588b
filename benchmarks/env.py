"""The benchmark's own world: data folder, embedded services, database, Redis prefix, children.

``BenchEnv`` is entered before Django is set up. It points this process (and every child) at its own
data folder (``.mutt/bench``, or a temporary one), its own database and its own Redis key prefix;
starts the embedded PostgreSQL and Redis unless ``DATABASE_URL`` / ``REDIS_URL`` are set; creates and
migrates the database; and on exit stops every child, checks that none survived, deletes its Redis
keys and stops the services it runs. A lock file keeps two harnesses off one folder, so services found
running there are leftovers of an interrupted run and are stopped as well.

The database is ``mutt_bench`` on the embedded server (kept for the next run). On a server named by
``DATABASE_URL``, which other runs may share (CI), it is ``mutt_bench_<random>`` and dropped at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

from benchmarks.procs import Children

logger = logging.getLogger("benchmarks")

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "mutt_bench"


class BenchEnv:
    def __init__(self, data_dir: Path, *, temporary: bool = False, durable: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.temporary = temporary
        self.durable = durable
        run_id = uuid.uuid4().hex[:8]
        self.prefix = f"mutt-bench-{run_id}"
        self.embedded_postgres = not os.environ.get("DATABASE_URL")
        self.database = DATABASE_NAME if self.embedded_postgres else f"{DATABASE_NAME}_{run_id}"
        self._database_created = False
        self.embedded_redis = not os.environ.get("REDIS_URL")
        self.children = Children(self.data_dir / "logs", BASE_DIR)
        self.leftovers: list[int] = []
        self._lock: TextIO | None = None
        self._services_up = False
        self._django_ready = False

    # --- entering --------------------------------------------------------------------------------

    def __enter__(self) -> BenchEnv:
        try:
            self._enter()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _enter(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = (self.data_dir / ".bench.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another benchmark is running in {self.data_dir}") from None
        if stale := self.children.kill_recorded():
            logger.warning("killed processes an interrupted benchmark left behind: %s", stale)
        # Logs and generator files are the last run's only (children append to their logs).
        for folder in (self.data_dir / "logs", self.data_dir / "loadgen"):
            shutil.rmtree(folder, ignore_errors=True)
        os.environ.update(self._own_env())
        if self.embedded_postgres or self.embedded_redis:
            from mutt_project import embedded

            self._services_up = True
            embedded.start(
                self.data_dir, postgres=self.embedded_postgres, redis=self.embedded_redis, durable=self.durable
            )
        import django

        django.setup()  # connects to nothing yet; the database is created, then migrated by a child
        self._django_ready = True
        self._create_database()
        self.run_manage("migrate", "--noinput", "-v", "0", timeout=600)

    def _own_env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "mutt_project.settings",
            "MUTT_DATA_DIR": str(self.data_dir),
            "MUTT_DATABASE_NAME": self.database,
            "MUTT_REDIS_PREFIX": self.prefix,
            "MUTT_LOG_FORMAT": "plain",
        }

    def _create_database(self) -> None:
        """Create the benchmark database on the server (embedded or ``DATABASE_URL``) if it does not exist."""
        from django.db import connection

        with connection._nodb_cursor() as cursor:  # Django's own way in (test database creation uses it)
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{self.database}"')
                self._database_created = True

    def _drop_database(self) -> None:
        """Drop a per-run database this run created on a shared server (children are stopped by now)."""
        from django.db import connection, connections

        connections.close_all()
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')  # PostgreSQL 13+

    # --- children -----------------------------------------------------------------------------

    def child_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self._own_env(), "PYTHONUNBUFFERED": "1", **extra}

    @staticmethod
    def manage_argv(*args: str) -> list[str]:
        return [sys.executable, str(BASE_DIR / "manage.py"), *args]

    def run_manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            self.manage_argv(*args), cwd=BASE_DIR, env=self.child_env(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result.stdout

    # --- shared state -------------------------------------------------------------------------

    def set_settings(self, values: dict[str, Any]) -> None:
        """Store runtime settings through the audited service (in the given order: relations hold)."""
        from configcenter.runtime import reload
        from configcenter.settings_service import set_setting
        from core.audit import Actor

        for name, value in values.items():
            set_setting(name, value, actor=Actor.system("bench"), reason="benchmark")
        reload()

    def reset_pipeline(self) -> None:
        """Empty streams, DLQs, dedup/idempotency/flood/rate-limit keys and the audit log; recreate groups."""
        from django.db import connection

        from core import contracts, streams
        from core.redis import get_redis, key

        client = get_redis()
        keep = {key("config", "values").encode()}
        batch: list[bytes] = []
        for name in client.scan_iter(match=f"{self.prefix}:*", count=5000):
            if name not in keep and not name.startswith(key("cache").encode()):
                batch.append(name)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
        streams.ensure_group(client, streams.ingest_stream(), contracts.ALERTERS_GROUP)
        streams.ensure_group(client, streams.alerts_stream(), contracts.FORWARDERS_GROUP)
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE rules_eventauditlog")

    # --- leaving ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop children, check none survived, drop Redis keys, stop services, release the folder."""
        self.children.stop_all()
        self.leftovers = self.children.survivors()
        if self.leftovers:
            logger.error("processes left behind and killed: %s", self.leftovers)
        else:
            self.children.record.unlink(missing_ok=True)
        if self._django_ready:
            self._forget_redis_keys()
            if self._database_created and not self.embedded_postgres:
                try:
                    self._drop_database()
                except Exception:
                    logger.exception("could not drop the benchmark database %s", self.database)
        if self._services_up:
            from mutt_project import embedded

            embedded.stop(self.data_dir, postgres=self.embedded_postgres, redis=self.embedded_redis)
            self._services_up = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self.temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _forget_redis_keys(self) -> None:
        from django.db import connections

        from configcenter import runtime
        from core.redis import get_redis, reset_clients

        runtime.reset()  # the settings subscriber must stop before its Redis goes away
        with contextlib.suppress(Exception):
            client = get_redis()
            names = list(client.scan_iter(match=f"{self.prefix}:*", count=5000))
            for start in range(0, len(names), 5000):
                client.unlink(*names[start : start + 5000])
        reset_clients()
        connections.close_all()
