"""DETACH and DROP of an audit log partition without holding up the alerter's inserts.

PostgreSQL refuses ``DETACH PARTITION ... CONCURRENTLY`` on a table with a default partition (PG 15
docs, ALTER TABLE), and ours has one. A plain DETACH takes an ACCESS EXCLUSIVE lock on the parent
for the instant it runs (a catalogue change, no data is moved), but while it *waits* for that lock
every new insert queues behind it. So each attempt waits at most ``LOCK_TIMEOUT_MS`` and gives up; it
is retried after a growing pause, leaving the alerter's COPYs free in between. The DROP then touches
only the detached table, which nothing else uses, so it never waits on the alerter.
"""

from __future__ import annotations

import logging
import time

from django.db import connection, transaction
from django.db.utils import OperationalError

from retention.archive.schema import TABLE

logger = logging.getLogger("mutt.retention.archive")

LOCK_TIMEOUT_MS = 200  # the longest an insert can wait behind one DETACH attempt
ATTEMPTS = 30  # ~1 minute of retries in all before the run fails (and the next run tries again)


class LockTimeout(RuntimeError):
    """DETACH could not get its lock within every attempt (the partition stays attached and intact)."""


def attachment(table: str) -> str:
    """``attached``, ``detached`` (a table of its own) or ``missing``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass(%s)::oid, EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s) "
            "AND inhparent = %s::regclass)",
            [f'"{table}"', f'"{table}"', TABLE],
        )
        oid, attached = cursor.fetchone()
    if oid is None:
        return "missing"
    return "attached" if attached else "detached"


def table_bytes(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [f'"{table}"'])
        return int(cursor.fetchone()[0])


def _locked(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "pgcode", None) == "55P03"  # lock_not_available


def _with_short_lock(sql: str, what: str) -> float:
    """Run ``sql`` with a short lock timeout, retrying; returns the seconds the successful attempt took."""
    pause = 0.05
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                cursor.execute(sql)
            return time.monotonic() - started
        except OperationalError as exc:
            if not _locked(exc) or attempt == ATTEMPTS:
                if _locked(exc):
                    raise LockTimeout(f"{what}: no lock after {ATTEMPTS} attempts of {LOCK_TIMEOUT_MS} ms") from exc
                raise
            logger.info("%s: lock busy (attempt %d), retrying in %.2f s", what, attempt, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    raise AssertionError("unreachable")


def detach(table: str) -> float:
    return _with_short_lock(f'ALTER TABLE "{TABLE}" DETACH PARTITION "{table}"', f"detach {table}")


def drop(table: str) -> float:
    return _with_short_lock(f'DROP TABLE "{table}"', f"drop {table}")
