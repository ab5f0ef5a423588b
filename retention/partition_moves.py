"""Rows of the default partition moved into partitions of their own, so no event time blocks partitioning.

PostgreSQL refuses ``CREATE TABLE ... PARTITION OF`` for a range the default partition holds rows of,
and ``ATTACH PARTITION`` scans the default partition for such rows under an ACCESS EXCLUSIVE lock on
it (PostgreSQL 15: ALTER TABLE, "ATTACH PARTITION"). So, for each range the default partition has
rows of (the ``partition_interval`` range holding them, cut to the gap between existing partitions):

1. a standalone table is made like the log (its indexes and constraints, so attaching builds none),
   with a CHECK of its range (so attaching need not scan it) and a comment naming the range (so a run
   cut short is found and finished by the next);
2. the range's rows go over in batches of ``batch_size``, until a batch comes back short (rows that
   arrive meanwhile are moved by later batches, unlocked; bounded by ``EXTRA_PASSES``): each batch
   one short transaction of ``DELETE ... RETURNING`` from the default partition into the table. A row
   is in one table or the other, never both nor neither, whenever the run is killed. The DELETE takes
   ROW EXCLUSIVE on the default partition, as the alerter's COPY does: they do not wait on each other;
3. the default partition is vacuumed (SHARE UPDATE EXCLUSIVE: inserts go on), so the scan ATTACH
   makes under its lock reads the live rows left, not the pages the move emptied;
4. one transaction with ``lock_timeout`` and ``statement_timeout``: the default partition locked
   ACCESS EXCLUSIVE (ATTACH would take that lock anyway), the few rows that arrived since the last,
   short batch moved, then ``ATTACH PARTITION``, which also takes SHARE UPDATE EXCLUSIVE on the log
   (inserts go on) and scans the default partition. Only an insert routed to the default partition
   waits, and only for that transaction (each statement at most ``statement_timeout``), or at most
   ``lock_timeout`` while the lock is waited for. A lock not had in time, or a statement cut off, sends
   it back to step 2, up to ``attach_attempts`` times; after that the table stays pending for the next
   run (the job reports it as failed; the run skips the pending range's rows that arrived meanwhile,
   the next run's drain moves them).

While a range is being moved its moved rows are in the pending table, not visible through the log;
a redelivered event audited meanwhile lands in the default partition a second time and is dropped
when moved (the row already moved is the one kept, as the alerter's ON CONFLICT DO NOTHING would),
counted in ``duplicates`` and logged. One session makes partitions at a time (``partition_lock``, shared
with ``ensure_partitions``): another finds it busy and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.utils import DatabaseError

from configcenter.runtime import get_setting
from retention.partitions import (
    DEFAULT,
    LOCK_NOT_AVAILABLE,
    LOCK_TIMEOUT_MS,
    PENDING_MARK,
    TABLE,
    Span,
    checked_interval,
    partition_lock,
    partition_name,
    pending_tables,
    span_for,
    taken_spans,
)

logger = logging.getLogger("mutt.partitions")

BATCH_SIZE = 10_000  # rows per transaction: ~0.5 s each on the 2-core test machine (ADR-015)
ATTACH_ATTEMPTS = 5
# Each statement of the attach's transaction (the lock, the last rows moved, ATTACH's scan of the default
# partition) is cut off after this: a hold that grows long (a default partition grown large, rows arriving
# faster than the batches go) aborts and is tried again later, rather than stalling the alerters' inserts
# routed there. Measured holds are tens of milliseconds (ADR-015).
ATTACH_STATEMENT_TIMEOUT_MS = 3_000
QUERY_CANCELED = "57014"  # statement_timeout
# Batches a drain goes on with once it moved as many rows as the range had at its start, waiting for one to
# come back short (rows arriving meanwhile are moved unlocked, not under the attach's lock).
EXTRA_PASSES = 10
# Rest after each batch as long as it took: a writer COPYing beside the mover kept 84-87% of its rate,
# against 35-80% with no rest, for about the same move time (2-core test machine; ADR-015).
PAUSE_RATIO = 1.0


@dataclass
class MoveReport:
    moved: dict[str, int] = field(default_factory=dict)  # partition: rows moved into it
    duplicates: dict[str, int] = field(default_factory=dict)  # partition: redelivered rows dropped
    attached: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # not attached (locks not had, or cut off): next run goes on
    busy: bool = False  # another mover was running: nothing done
    # "start..end": rows left in the default partition because the range ended before the retention horizon
    expired: dict[str, int] = field(default_factory=dict)
    lock_held_ms: float = 0.0  # the longest the default partition was locked (an attach's transaction)
    moved_locked: int = 0  # the most rows an attach moved under its lock (those that arrived after the drain)

    @property
    def rows(self) -> int:
        return sum(self.moved.values())

    def as_details(self) -> dict[str, object]:
        return {
            "moved": self.moved,
            "duplicates": self.duplicates,
            "attached": self.attached,
            "pending": self.pending,
            "lock_held_ms": round(self.lock_held_ms, 1),
            "moved_locked": self.moved_locked,
            "expired": self.expired,
        }


def move_default_rows(
    *,
    batch_size: int = BATCH_SIZE,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    attach_attempts: int = ATTACH_ATTEMPTS,
    attach_statement_timeout_ms: int = ATTACH_STATEMENT_TIMEOUT_MS,
    interval: str | None = None,
    after_batch: Callable[[str, int], None] | None = None,
    pause_ratio: float = PAUSE_RATIO,
    now: datetime | None = None,
) -> MoveReport:
    """Give every range with rows in the default partition a partition made of those rows.

    ``interval`` defaults to the ``partition_interval`` setting, read now. ``after_batch(table, rows)``
    is called after each committed batch (progress, and tests that stop a run at a chosen point). After
    each batch the mover rests ``pause_ratio`` times as long as the batch took, leaving the database's
    CPU and disk to the alerters. A range that ended ``event_retention_days`` before ``now`` (default:
    the present) is not made: retention archived or would at once archive it; its rows stay in the
    default partition, counted in ``expired`` and logged.
    Raises on an unreachable database.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, not {batch_size}")
    if attach_attempts < 1:
        raise ValueError(f"attach_attempts: must be at least 1, not {attach_attempts}")
    report = MoveReport()
    with partition_lock() as held:
        if not held:
            report.busy = True
            return report
        mover = _Mover(
            report,
            batch_size=batch_size,
            lock_timeout_ms=lock_timeout_ms,
            attach_attempts=attach_attempts,
            statement_timeout_ms=attach_statement_timeout_ms,
            after_batch=after_batch,
            pause_ratio=pause_ratio,
        )
        for name, span in pending_tables():  # a run cut short: finish its tables first
            mover.fill_and_attach(name, span)
        interval = checked_interval(interval)
        horizon = (now or datetime.now(UTC)) - timedelta(days=int(get_setting("event_retention_days")))
        taken = taken_spans()
        after = None
        while (first := _first_time(after)) is not None:
            day = first.astimezone(UTC).date()
            holder = next((span for span in taken if span.holds(day)), None)
            if holder is not None:
                # Only a table left pending above (its attach's locks not had) can hold a range with rows
                # still in the default partition (rows that arrived after its last batch): the next run
                # finishes it. Its range is skipped, never given a second, overlapping table.
                after = holder.bounds[1]
                continue
            span = span_for(day, interval, taken)
            after = span.bounds[1]
            if datetime.fromisoformat(after) <= horizon:
                _leave_expired(report, span, horizon)
                continue
            name = partition_name(*span)
            _create_pending(name, span)
            taken.append(span)
            mover.fill_and_attach(name, span)
    return report


def _leave_expired(report: MoveReport, span: Span, horizon: datetime) -> None:
    """Count and log the default partition's rows of a range past the retention horizon, left where they are:
    a partition for it would recreate a month retention archived (a replayed dead letter audited late)."""
    start, end = span.bounds
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{DEFAULT}" WHERE event_time >= %s AND event_time < %s', [start, end])  # noqa: S608
        rows = int(cursor.fetchone()[0])
    report.expired[f"{span.start}..{span.end}"] = rows
    logger.warning(
        "%d audit rows of %s..%s left in the default partition: the range ended before the retention horizon "
        "(%s, event_retention_days), so no partition is made for it",
        rows, span.start, span.end, horizon.date(),
    )  # fmt: skip


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
        *,
        batch_size: int,
        lock_timeout_ms: int,
        attach_attempts: int,
        statement_timeout_ms: int,
        after_batch: Callable[[str, int], None] | None,
        pause_ratio: float,
    ) -> None:
        self.report = report
        self.statement_timeout_ms = statement_timeout_ms
        self.batch_size = batch_size
        self.lock_timeout_ms = lock_timeout_ms
        self.attach_attempts = attach_attempts
        self.after_batch = after_batch
        self.pause_ratio = pause_ratio
        self.columns = _columns()

    def fill_and_attach(self, name: str, span: Span) -> None:
        self.report.moved.setdefault(name, 0)
        for attempt in range(1, self.attach_attempts + 1):
            if self._drain(name, span):
                self._vacuum_default()
            failed = self._attach(name, span)
            if failed is None:
                self.report.attached.append(name)
                logger.info(
                    "attached %s (%d rows moved from the default partition; it was locked %.0f ms at most)",
                    name, self.report.moved[name], self.report.lock_held_ms,
                )  # fmt: skip
                return
            logger.info("attaching %s, attempt %d of %d: %s", name, attempt, self.attach_attempts, failed)
            time.sleep(min(0.05 * attempt, 0.5))  # let the inserts that waited on the lock go first
        logger.warning("%s left pending after %d attempts to attach it; the next run goes on", name, attempt)
        self.report.pending.append(name)

    def _batch_sql(self, name: str, limit: bool) -> str:
        rows = f'SELECT ctid FROM "{DEFAULT}" WHERE event_time >= %s AND event_time < %s'  # noqa: S608
        rows += " LIMIT %s" if limit else ""
        return (
            f'WITH gone AS (DELETE FROM "{DEFAULT}" WHERE ctid = ANY(ARRAY({rows})) RETURNING {self.columns}), '  # noqa: S608
            f'kept AS (INSERT INTO "{name}" ({self.columns}) SELECT {self.columns} FROM gone '
            "ON CONFLICT DO NOTHING RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM kept)"
        )

    def _count(self, name: str, gone: int, kept: int) -> None:
        self.report.moved[name] = self.report.moved.get(name, 0) + kept
        if gone != kept:
            self.report.duplicates[name] = self.report.duplicates.get(name, 0) + gone - kept
            logger.warning("%d redelivered audit rows of %s were already moved: dropped", gone - kept, name)

    def _drain(self, name: str, span: Span) -> int:
        """Move the range's rows out of the default partition, a batch per transaction, until a batch
        comes back short (caught up: rows that arrived meanwhile were moved by the later batches, unlocked);
        the rows moved. What the attach then moves under its lock is what arrived after that short batch.
        Rows arriving as fast as the batches go would keep this from ever catching up: once as many rows
        as were there at the start are moved, at most ``EXTRA_PASSES`` more batches go, then the attach
        is tried (its statement_timeout bounds the hold; cut off, it comes back here)."""
        start, end = span.bounds
        sql = self._batch_sql(name, limit=True)
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT count(*) FROM "{DEFAULT}" WHERE event_time >= %s AND event_time < %s', [start, end])  # noqa: S608
            there = int(cursor.fetchone()[0])
        total = extra = 0
        while True:
            began = time.monotonic()
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [start, end, self.batch_size])
                gone, kept = cursor.fetchone()
            if gone == self.batch_size and self.pause_ratio > 0:
                time.sleep((time.monotonic() - began) * self.pause_ratio)
            total += gone
            self._count(name, gone, kept)
            if gone and self.after_batch is not None:
                self.after_batch(name, kept)
            if gone < self.batch_size:
                return total
            if total > there:
                extra += 1
                if extra > EXTRA_PASSES:
                    logger.warning(
                        "rows of %s..%s arrive in the default partition as fast as they are moved: attaching %s "
                        "with %d batches moved beyond the %d rows there at the start",
                        span.start, span.end, name, extra - 1, there,
                    )  # fmt: skip
                    return total

    def _vacuum_default(self) -> None:
        if connection.in_atomic_block:  # VACUUM cannot run in a transaction (a caller's, or a test's)
            return
        with connection.cursor() as cursor:
            cursor.execute(f'VACUUM "{DEFAULT}"')

    def _attach(self, name: str, span: Span) -> str | None:
        """Attach ``name``; None when done, else why not (its locks not had in time, or a statement of
        the transaction cut off by its statement_timeout).

        One transaction: the default partition locked first (ACCESS EXCLUSIVE, as ATTACH would lock it),
        so the rows that arrived since the last, short batch (fewer than a batch, unless they arrive
        faster than that) are moved with no more arriving, and ATTACH's scan of the default partition
        finds none of the range. The hold is bounded by ``statement_timeout`` per statement.
        """
        start, end = span.bounds
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
                cursor.execute(f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}")
                cursor.execute(f'LOCK TABLE "{DEFAULT}" IN ACCESS EXCLUSIVE MODE')
                locked = time.monotonic()
                cursor.execute(self._batch_sql(name, limit=False), [start, end])
                gone, kept = cursor.fetchone()
                cursor.execute(
                    f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)', [start, end]
                )
                cursor.execute(f'COMMENT ON TABLE "{name}" IS NULL')
        except DatabaseError as exc:
            if getattr(exc.__cause__, "pgcode", None) in (LOCK_NOT_AVAILABLE, QUERY_CANCELED):
                return str(exc).strip().splitlines()[0]
            raise
        held = (time.monotonic() - locked) * 1000
        self.report.lock_held_ms = max(self.report.lock_held_ms, held)
        self.report.moved_locked = max(self.report.moved_locked, gone)
        self._count(name, gone, kept)
        return None
