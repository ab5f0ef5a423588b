"""Rows of the default partition moved into partitions of their own, so no event time blocks partitioning.

PostgreSQL refuses ``CREATE TABLE ... PARTITION OF`` for a range the default partition holds rows of,
and ``ATTACH PARTITION`` scans the default partition for such rows under an ACCESS EXCLUSIVE lock on
it (PostgreSQL 15: ALTER TABLE, "ATTACH PARTITION"). So, for each range the default partition has
rows of (the ``partition_interval`` range holding them, cut to the gap between existing partitions):

1. a standalone table is made like the log (its indexes and constraints, so attaching builds none),
   with a CHECK of its range (so attaching need not scan it) and a comment naming the range (so a run
   cut short is found and finished by the next);
2. the range's rows go over in batches of ``batch_size``: each batch one short transaction of
   ``DELETE ... RETURNING`` from the default partition into the table. A row is in one table or the
   other, never both nor neither, whenever the run is killed. The DELETE takes ROW EXCLUSIVE on the
   default partition, as the alerter's COPY does: they do not wait on each other;
3. the default partition is vacuumed (SHARE UPDATE EXCLUSIVE: inserts go on), so the scan ATTACH
   makes under its lock reads the live rows left, not the pages the move emptied;
4. ``ATTACH PARTITION`` with ``lock_timeout``: it takes SHARE UPDATE EXCLUSIVE on the log (inserts go
   on) and ACCESS EXCLUSIVE on the table and the default partition for as long as the scan of the
   default partition takes. Only an insert routed to the default partition waits, at most the
   ``lock_timeout``. A lock not had in time, or rows of the range that reached the default partition
   meanwhile (the attach then fails), send it back to step 2, up to ``attach_attempts`` times; after
   that the table stays pending for the next run.

While a range is being moved its moved rows are in the pending table, not visible through the log;
a redelivered event audited meanwhile lands in the default partition a second time and is dropped
when moved (the row already moved is the one kept, as the alerter's ON CONFLICT DO NOTHING would),
counted in ``duplicates`` and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import OperationalError, connection, transaction
from django.db.utils import DatabaseError

from retention.partitions import (
    DEFAULT,
    PENDING_MARK,
    TABLE,
    Span,
    checked_interval,
    partition_name,
    pending_tables,
    span_for,
    taken_spans,
)

logger = logging.getLogger("mutt.partitions")

BATCH_SIZE = 10_000  # rows per transaction: measured ~60 ms a batch of real audit rows (see ADR-015)
LOCK_TIMEOUT_MS = 200  # the most an insert into the default partition waits for an attach
ATTACH_ATTEMPTS = 5
# One mover at a time (an operator's call and the job's): a session lock, released if the process dies.
_ADVISORY_KEY = 0x4D55_5454_0015  # "MUTT" 15
_LOCK_NOT_AVAILABLE = "55P03"
_CHECK_VIOLATION = "23514"  # the attach found rows of the range in the default partition


@dataclass
class MoveReport:
    moved: dict[str, int] = field(default_factory=dict)  # partition: rows moved into it
    duplicates: dict[str, int] = field(default_factory=dict)  # partition: redelivered rows dropped
    attached: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # not attached this run (locks not had): the next run goes on
    busy: bool = False  # another mover was running: nothing done

    @property
    def rows(self) -> int:
        return sum(self.moved.values())

    def as_details(self) -> dict[str, object]:
        return {"moved": self.moved, "duplicates": self.duplicates, "attached": self.attached, "pending": self.pending}


def move_default_rows(
    *,
    batch_size: int = BATCH_SIZE,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    attach_attempts: int = ATTACH_ATTEMPTS,
    interval: str | None = None,
    after_batch: Callable[[str, int], None] | None = None,
) -> MoveReport:
    """Give every range with rows in the default partition a partition made of those rows.

    ``interval`` defaults to the ``partition_interval`` setting, read now. ``after_batch(table, rows)``
    is called after each committed batch (progress, and tests that stop a run at a chosen point).
    Raises on an unreachable database.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, not {batch_size}")
    report = MoveReport()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_ADVISORY_KEY])
        if not cursor.fetchone()[0]:
            report.busy = True
            return report
    try:
        mover = _Mover(report, batch_size, lock_timeout_ms, attach_attempts, after_batch)
        for name, span in pending_tables():  # a run cut short: finish its tables first
            mover.fill_and_attach(name, span)
        interval = checked_interval(interval)
        taken = taken_spans()
        after = None
        while (first := _first_time(after)) is not None:
            span = span_for(first.astimezone(UTC).date(), interval, taken)
            name = partition_name(*span)
            _create_pending(name, span)
            taken.append(span)
            mover.fill_and_attach(name, span)
            after = span.bounds[1]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_ADVISORY_KEY])
    return report


def _first_time(after: str | None) -> datetime | None:
    """The earliest event time in the default partition (from ``after`` on): one index probe."""
    with connection.cursor() as cursor:
        if after is None:
            cursor.execute(f'SELECT min(event_time) FROM "{DEFAULT}"')  # noqa: S608
        else:
            cursor.execute(f'SELECT min(event_time) FROM "{DEFAULT}" WHERE event_time >= %s', [after])  # noqa: S608
        found: datetime | None = cursor.fetchone()[0]
    return found


def _create_pending(name: str, span: Span) -> None:
    start, end = span.bounds
    with transaction.atomic(), connection.cursor() as cursor:
        # Identity excluded: the log's own identity numbers new rows; moved rows keep their ids.
        cursor.execute(f'CREATE TABLE "{name}" (LIKE "{TABLE}" INCLUDING ALL EXCLUDING IDENTITY)')
        cursor.execute(
            f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_range" CHECK (event_time >= %s AND event_time < %s)',
            [start, end],
        )
        cursor.execute(f'COMMENT ON TABLE "{name}" IS %s', [f"{PENDING_MARK} {span.start} {span.end}"])
    logger.info("moving the default partition's rows of %s..%s into %s", span.start, span.end, name)


def _columns() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum",
            [TABLE],
        )
        return ", ".join(f'"{name}"' for (name,) in cursor.fetchall())


class _Mover:
    def __init__(
        self,
        report: MoveReport,
        batch_size: int,
        lock_timeout_ms: int,
        attach_attempts: int,
        after_batch: Callable[[str, int], None] | None,
    ) -> None:
        self.report = report
        self.batch_size = batch_size
        self.lock_timeout_ms = lock_timeout_ms
        self.attach_attempts = attach_attempts
        self.after_batch = after_batch
        self.columns = _columns()

    def fill_and_attach(self, name: str, span: Span) -> None:
        self.report.moved.setdefault(name, 0)
        for attempt in range(1, self.attach_attempts + 1):
            if self._drain(name, span) or attempt == 1:
                self._vacuum_default()
            failed = self._attach(name, span)
            if failed is None:
                self.report.attached.append(name)
                logger.info("attached %s (%d rows moved from the default partition)", name, self.report.moved[name])
                return
            logger.info("attaching %s, attempt %d of %d: %s", name, attempt, self.attach_attempts, failed)
            time.sleep(min(0.05 * attempt, 0.5))  # let the inserts that waited on the lock go first
        logger.warning("%s left pending after %d attempts to attach it; the next run goes on", name, attempt)
        self.report.pending.append(name)

    def _drain(self, name: str, span: Span) -> int:
        """Move the range's rows out of the default partition, a batch per transaction; the rows moved."""
        start, end = span.bounds
        sql = (
            f'WITH gone AS (DELETE FROM "{DEFAULT}" WHERE ctid = ANY(ARRAY('  # noqa: S608
            f'SELECT ctid FROM "{DEFAULT}" WHERE event_time >= %s AND event_time < %s LIMIT %s)) '
            f"RETURNING {self.columns}), "
            f'kept AS (INSERT INTO "{name}" ({self.columns}) SELECT {self.columns} FROM gone '
            "ON CONFLICT DO NOTHING RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM kept)"
        )
        total = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [start, end, self.batch_size])
                gone, kept = cursor.fetchone()
            if not gone:
                return total
            total += gone
            self.report.moved[name] = self.report.moved.get(name, 0) + kept
            if gone != kept:
                self.report.duplicates[name] = self.report.duplicates.get(name, 0) + gone - kept
                logger.warning("%d redelivered audit rows of %s were already moved: dropped", gone - kept, name)
            if self.after_batch is not None:
                self.after_batch(name, kept)

    def _vacuum_default(self) -> None:
        if connection.in_atomic_block:  # VACUUM cannot run in a transaction (a caller's, or a test's)
            return
        with connection.cursor() as cursor:
            cursor.execute(f'VACUUM "{DEFAULT}"')

    def _attach(self, name: str, span: Span) -> str | None:
        """Attach ``name``; None when done, else why not (a lock not had in time, rows arrived meanwhile)."""
        start, end = span.bounds
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
                cursor.execute(
                    f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)', [start, end]
                )
                cursor.execute(f'COMMENT ON TABLE "{name}" IS NULL')
        except (OperationalError, DatabaseError) as exc:
            code = getattr(exc.__cause__, "pgcode", None)
            if code in (_LOCK_NOT_AVAILABLE, _CHECK_VIOLATION):
                return str(exc).strip().splitlines()[0]
            raise
        return None
