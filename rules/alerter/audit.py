"""The audit writer: a batch's audit rows into ``rules_eventauditlog``, in one statement when it can.

One COPY per batch. A redelivered event makes the COPY fail on the unique (event_id, event_time); the
batch then goes in with INSERT ... ON CONFLICT DO NOTHING, so it changes nothing. A row the database
refuses for its data goes to the DLQ alone, its neighbours audited (``blames_the_data`` is the SQLSTATE
policy); any other refusal, and an unreachable database, is raised for the step loop to hold the batch.
Events dead-lettered before evaluation are audited as such (``write_dead``).

In pipelined mode the audit runs in a writer thread of its own (``submit``), on that thread's own
database connection: psycopg2 lets go of the GIL while PostgreSQL works, so the alerter's thread
evaluates the next batch meanwhile.
"""

from __future__ import annotations

import io
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    connections,
    transaction,
)
from psycopg2.extras import execute_values

from core.contracts import DEAD_LETTERED, PROCESSING_ERROR
from rules import metrics
from rules.alerter.copytext import AUDIT_COLUMNS
from rules.alerter.evaluate import Decoded, Evaluated, Poison

logger = logging.getLogger("mutt.alerter")

_INSERT_SQL = """
INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, rule_id, handling,
    team, forwarded, alert_severity, syslog_severity, message, trap_oid, source_type, correlation_id, raw)
VALUES %s
ON CONFLICT (event_id, event_time) DO NOTHING
"""
_INSERT_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json)"
# The fast path: COPY the batch straight into the partitioned table (PostgreSQL routes each row). A
# redelivered event makes it fail on the unique (event_id, event_time); then the batch goes through
# the INSERT ... ON CONFLICT DO NOTHING above, so redelivery stays idempotent at no cost to the
# common case.
_COPY_SQL = f"COPY rules_eventauditlog ({', '.join(AUDIT_COLUMNS)}) FROM STDIN"
# An event dead-lettered before it was matched (delivered too often) is audited as such, with the reason. A
# row the event already has (audited by an alerter that died before acknowledging it) is left as it is.
_INSERT_DEAD_SQL = (
    f"INSERT INTO rules_eventauditlog ({', '.join(AUDIT_COLUMNS)}, dead_letter_reason) VALUES %s "  # noqa: S608
    "ON CONFLICT (event_id, event_time) DO NOTHING"
)
_INSERT_DEAD_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s)"
# When such an event comes back (replayed from the DLQ), its row takes the real outcome: updated, not added
# (the INSERT ... ON CONFLICT DO NOTHING of a redelivered batch leaves it alone). The reason stays, as the
# record that the event was dead-lettered once. UPDATE ... FROM tolerates an event twice in the batch.
_COLUMN_TYPES = {
    "event_id": "uuid", "event_time": "timestamptz", "received_at": "timestamptz", "rule_id": "bigint",
    "forwarded": "boolean", "syslog_severity": "smallint", "raw": "json",
}  # fmt: skip
_REVIVE_SET = ", ".join(
    f"{c} = v.{c}" + (f"::{_COLUMN_TYPES[c]}" if c in _COLUMN_TYPES else "") for c in AUDIT_COLUMNS[2:]
)
_REVIVE_SQL = (
    f"UPDATE rules_eventauditlog AS a SET {_REVIVE_SET} FROM (VALUES %s) AS v ({', '.join(AUDIT_COLUMNS)}) "  # noqa: S608
    f"WHERE a.handling = '{DEAD_LETTERED}' AND a.event_id = v.event_id::uuid "
    "AND a.event_time = v.event_time::timestamptz"
)
# The pipelined alerter's audit writer thread needs the GIL back after each database call. At Python's
# default switch interval (5 ms) it waits that long behind the evaluating thread several times per
# batch, longer than the evaluation itself; at 0.2 ms the audit keeps pace (measured: the evaluating
# thread then waited 2% of a run for the writer, against 45% at 5 ms). run_alerter sets it.
WRITER_SWITCH_INTERVAL = 0.0002
WRITER_CONNECTION_CHECK_SECONDS = 1.0
# SQLSTATE classes that blame a row: 22 data exception (a value the column cannot take), 23 integrity
# constraint violation (NOT NULL, CHECK, no partition for the row's time), 54 program limit exceeded
# (a value too large for an index). Any other refusal comes from the database's state: 25006 a
# server left read-only by a failover, 53100 a full disk, 42501 a revoked privilege, 57P01 an
# administrator's shutdown. Sending rows to the DLQ for those would empty the stream into it for as
# long as the state lasts; the batch is held like an outage instead. The INSERTs send every value as
# the text the COPY sends (``_insert_values``), so a value of the wrong JSON type fails as class 22 in
# both rather than as a type mismatch (42804) of the INSERT alone.
_DATA_ERROR_CLASSES = ("22", "23", "54")
# One class 23 refusal is the database's state: an insert routed to the DEFAULT partition that waited
# behind the partition manager attaching (or creating) the partition of its range is refused after it,
# "violates partition constraint". The batch is held and sent again, and then lands in the new partition.
# Told apart from a CHECK constraint's refusal (the same SQLSTATE) by naming no constraint, whatever the
# language of the server's messages.
_CHECK_VIOLATION = "23514"

Audited = tuple[list[Any], list[Poison]]  # the evaluated events audited, and the poison of the refused rows


def blames_the_data(exc: BaseException) -> bool:
    """Whether the database (or psycopg2, e.g. on a NUL character) refused ``exc``'s statement because of
    the values in it, not because of the database's state (see ``_DATA_ERROR_CLASSES``)."""
    if isinstance(exc, ValueError):
        return True
    cause = exc.__cause__ if getattr(exc.__cause__, "pgcode", None) else exc
    code = getattr(cause, "pgcode", None)
    if code == _CHECK_VIOLATION and getattr(getattr(cause, "diag", None), "constraint_name", "") is None:
        return False  # the partitions changed under the insert (ADR-015): sent again, the row finds its own
    # No SQLSTATE: psycopg2 refused to send the values (an adaptation error), so the data again.
    return code is None or code[:2] in _DATA_ERROR_CLASSES


def _insert_values(row: tuple[Any, ...]) -> tuple[str | None, ...]:
    """An audit row's values for ``_INSERT_SQL``, as COPY would read them: text (or NULL), which the
    database converts to each column's type."""
    return tuple(
        value if value is None or value.__class__ is str
        else "t" if value is True
        else "f" if value is False
        else str(value)
        for value in row
    )  # fmt: skip


class AuditWriter:
    """Writes batches' audit rows: here and now (``audit``), or in its writer thread (``submit``)."""

    def __init__(self) -> None:
        self._thread: ThreadPoolExecutor | None = None  # started by the first ``submit``
        self._checked_at = 0.0  # read and written by the writer thread only

    def submit(self, rows: Evaluated) -> Future[Audited]:
        """Audit ``rows`` in the writer thread; the future gives ``audit``'s result or raises its error."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerter-audit")
        return self._thread.submit(self._audit_in_writer, rows)

    def close(self) -> None:
        """End the writer thread, closing its database connection first."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            thread.submit(connections.close_all).result()  # the writer thread's own connection
        finally:
            thread.shutdown()

    def _audit_in_writer(self, rows: Evaluated) -> Audited:
        """``audit`` in the writer thread, whose connection the worker loop never sees: now and then it
        is checked the way the loop checks the main thread's (closed when past its age or broken)."""
        now = time.monotonic()
        if now >= self._checked_at + WRITER_CONNECTION_CHECK_SECONDS:
            self._checked_at = now
            close_old_connections()
        return self.audit(rows)

    def audit(self, rows: Evaluated) -> Audited:
        """Write the batch's audit rows in one transaction: one COPY; on a redelivered event, one
        INSERT ... ON CONFLICT DO NOTHING; if the database refuses the data, find the rows it refuses.
        Returns the evaluated events that are audited and the poison of the refused rows.

        Runs in the writer thread in pipelined mode, on that thread's own connection. psycopg2's own
        errors are wrapped into Django's, so an unreachable database surfaces as OperationalError or
        InterfaceError (an outage: the caller holds the batch) whichever call hits it; the broken
        connection is closed so that the next attempt opens a new one. A refusal that does not blame the
        data (``blames_the_data``) is raised as an outage too, whichever row it came from.
        """
        try:
            return self._write(rows)
        except DatabaseError:
            # Unreachable, or refusing for a reason of its own state (``_write`` raises no other): a new
            # connection may find a new primary, so do not keep this one.
            connection.close()
            raise

    def _write(self, rows: Evaluated) -> Audited:
        audited, refused = self._write_evaluated(rows)
        if rows.dead:
            refused = refused + self.write_dead(rows.dead)
        return audited, refused

    def _write_evaluated(self, rows: Evaluated) -> Audited:
        evaluated = rows.evaluated
        if not evaluated:
            return [], []
        # Each statement below is its own transaction (Django's connections autocommit): one COPY or one
        # INSERT writes the whole batch or nothing, with no BEGIN and COMMIT round trips around it.
        try:
            with connection.cursor() as cursor, connection.wrap_database_errors:
                # One read of the whole text: one send, during which psycopg2 lets other threads run.
                cursor.cursor.copy_expert(_COPY_SQL, io.BytesIO(rows.copy), size=len(rows.copy) + 1)
            return evaluated, []
        except (OperationalError, InterfaceError):
            raise
        except IntegrityError:
            metrics.AUDIT_REDELIVERED_BATCHES.inc()  # some event of the batch is audited already
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            logger.warning("the database refused a batch (%s); inserting row by row to isolate it", exc)
            return self._insert_rows_alone(evaluated)
        try:
            with connection.cursor() as cursor, connection.wrap_database_errors:
                values = [_insert_values(row) for _, row, *_ in evaluated]
                execute_values(cursor.cursor, _INSERT_SQL, values, template=_INSERT_TEMPLATE, page_size=len(values))
            self._revive(values)
            return evaluated, []
        except (OperationalError, InterfaceError):
            raise
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            logger.warning("the database refused a batch (%s); inserting row by row to isolate it", exc)
        return self._insert_rows_alone(evaluated)

    def _insert_rows_alone(self, evaluated: list[Any]) -> Audited:
        kept, refused = [], []
        with transaction.atomic():
            for entry in evaluated:
                item, row, *_ = entry
                try:
                    with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                        execute_values(cursor.cursor, _INSERT_SQL, [_insert_values(row)], template=_INSERT_TEMPLATE)
                    kept.append(entry)
                except (OperationalError, InterfaceError):
                    raise
                except (DatabaseError, ValueError) as exc:
                    if not blames_the_data(exc):
                        raise
                    refused.append((item.entry_id, item.raw, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
            if kept:
                self._revive([_insert_values(row) for _, row, *_ in kept])
        return kept, refused

    def _revive(self, values: list[tuple[str | None, ...]]) -> None:
        """Give the rows of events dead-lettered earlier and now replayed (in a redelivered batch: their row
        made the COPY fail) the outcome of this audit. A separate statement after the INSERT: a crash in
        between leaves the entries pending, and the redone batch updates them. A refusal of the data here
        (not expected: the INSERT took the same values) leaves those rows as they were, logged."""
        try:
            with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                execute_values(cursor.cursor, _REVIVE_SQL, values, page_size=len(values))
        except (OperationalError, InterfaceError):
            raise
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            logger.warning("could not update the audit rows of replayed dead-lettered events (%s)", exc)

    def write_dead(self, dead: list[tuple[Decoded, tuple[Any, ...]]]) -> list[Poison]:
        """Audit the events dead-lettered before evaluation (``handling`` dead_lettered, with the reason); an
        event audited already keeps its row. Returns their poison for the DLQ. A row the database refuses
        for its data leaves its event unaudited: the DLQ entry's error says so."""
        refusals: dict[bytes, str] = {}
        try:
            with connection.cursor() as cursor, connection.wrap_database_errors:
                values = [_insert_values(row) for _, row in dead]
                execute_values(
                    cursor.cursor, _INSERT_DEAD_SQL, values, template=_INSERT_DEAD_TEMPLATE, page_size=len(values)
                )
        except (OperationalError, InterfaceError):
            raise
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            with transaction.atomic():
                for item, row in dead:
                    try:
                        with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                            execute_values(
                                cursor.cursor, _INSERT_DEAD_SQL, [_insert_values(row)], template=_INSERT_DEAD_TEMPLATE
                            )
                    except (OperationalError, InterfaceError):
                        raise
                    except (DatabaseError, ValueError) as row_exc:
                        if not blames_the_data(row_exc):
                            raise
                        refusals[item.entry_id] = f"{type(row_exc).__name__}: {row_exc}"
            if refusals:
                logger.warning("the database refused the audit rows of %d dead-lettered events", len(refusals))
        poison = []
        for item, _ in dead:
            reason, error = item.dead_letter or ("", "")
            refusal = refusals.get(item.entry_id)
            poison.append((item.entry_id, item.raw, reason, f"{error}; not audited: {refusal}" if refusal else error))
        return poison
