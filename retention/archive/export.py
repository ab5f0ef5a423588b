"""One partition streamed into zstd Parquet files plus a manifest, in the archive store.

PostgreSQL sends the rows with ``COPY ... TO STDOUT (FORMAT csv)``, which a thread writes into a pipe
that pyarrow's streaming CSV reader parses in blocks: nothing holds more than a row group (plus one
block) in memory, whatever the partition's size. The count and content checksum recorded in the
manifest are PostgreSQL's own (:func:`schema.summarize_table`), taken in the same REPEATABLE READ
snapshot as the COPY, so the verifier compares the files with the partition and not with the exporter.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from django.conf import settings
from django.db import connection, transaction

from retention.archive import faults, schema
from retention.archive.store import ArchiveStore, sha256_file
from retention.policies import Progress

# 128k rows (~15 MB of audit rows in memory) per row group: large enough for zstd and column statistics
# to pay, small enough that a reader (DuckDB, the verifier) streams a file in bounded memory.
ROW_GROUP_ROWS = 131_072
# Files of at most ~1M rows (~60 MB compressed): an interrupted upload is redone per file, not per month.
FILE_ROWS = 1_048_576
# zstd level 1 with dictionaries only where values repeat: on 1.1M benchmark rows 3.2 s and 134 B/row, against
# 6.0 s and 142 B/row for level 3 with dictionaries everywhere (ids, messages and raw JSON barely repeat).
ZSTD_LEVEL = 1
DICTIONARY_COLUMNS = ["hostname", "environment", "handling", "team", "alert_severity", "trap_oid", "source_type",
                      "message", "dead_letter_reason"]  # fmt: skip

_CSV_TYPES = {
    "id": pa.int64(),
    "event_time": pa.int64(),
    "received_at": pa.int64(),
    "rule_id": pa.int64(),
    "forwarded": pa.int8(),
    "syslog_severity": pa.int16(),
}


@dataclass(frozen=True)
class Target:
    """What is being archived: a table (a partition, or a detached one) and where its files go."""

    table: str
    range_start: datetime
    range_end: datetime
    prefix: str  # key prefix in the store, ending in "/"


def prefix_for(partition: str, generation: int) -> str:
    return f"events/{partition}/g{generation}/"


def manifest_key(prefix: str) -> str:
    return f"{prefix}manifest.json"


class _CopyPipe(threading.Thread):
    """Runs COPY TO STDOUT into the write end of a pipe; the read end feeds pyarrow."""

    def __init__(self, raw_cursor: Any, sql: str, write_fd: int) -> None:
        super().__init__(name="archive-copy", daemon=True)
        self.raw_cursor = raw_cursor
        self.sql = sql
        self.write_fd = write_fd
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with os.fdopen(self.write_fd, "wb", buffering=1 << 20) as sink:
                self.raw_cursor.copy_expert(self.sql, sink)
        except BaseException as exc:  # reported by the reading side, which re-raises it
            self.error = exc


class _Summary(threading.Thread):
    """PostgreSQL's count and checksum of the table, on a connection of its own in the exporter's snapshot.

    It runs beside the COPY (another backend, another core) instead of before it: on the 2,000,000-row
    benchmark that saves its whole ~8 s. ``SET TRANSACTION SNAPSHOT`` makes it see exactly the rows the
    COPY sends, so a late insert cannot make the two disagree.
    """

    def __init__(self, table: str, snapshot: str) -> None:
        super().__init__(name="archive-summary", daemon=True)
        self.table, self.snapshot = table, snapshot
        self.result: schema.Summary | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            raw = connection.get_new_connection(connection.get_connection_params())
            try:
                with raw.cursor() as cursor:
                    cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                    cursor.execute("SET TRANSACTION SNAPSHOT %s", [self.snapshot])
                    cursor.execute(schema.summarize_sql(self.table))
                    self.result = schema.summary_of(cursor.fetchone())
                    cursor.execute("ROLLBACK")
            finally:
                raw.close()
        except BaseException as exc:  # re-raised by the exporter
            self.error = exc

    def summary(self) -> schema.Summary:
        self.join()
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise RuntimeError(f"no summary of {self.table}")
        return self.result


def _to_archive(batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = []
    for name, kind, _ in schema.COLUMNS:
        column = batch.column(name)
        if name in schema.TIMES:
            column = column.cast(kind)
        elif name == "forwarded":
            column = column.cast(pa.bool_())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema.ARROW_SCHEMA)


class _Files:
    """Rolls Parquet files at FILE_ROWS, uploads each when complete, and lists them for the manifest."""

    def __init__(self, store: ArchiveStore, target: Target, folder: Path) -> None:
        self.store, self.target, self.folder = store, target, folder
        self.writer: pq.ParquetWriter | None = None
        self.path: Path | None = None
        self.rows_in_file = 0
        self.listed: list[dict[str, Any]] = []

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path = self.folder / f"part-{len(self.listed):05d}.parquet"
            self.writer = pq.ParquetWriter(
                self.path,
                schema.ARROW_SCHEMA,
                compression="zstd",
                compression_level=ZSTD_LEVEL,
                use_dictionary=DICTIONARY_COLUMNS,
            )
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows_in_file += table.num_rows
        if self.rows_in_file >= FILE_ROWS:
            self.close()

    def close(self) -> None:
        if self.writer is None or self.path is None:
            return
        self.writer.close()
        key = f"{self.target.prefix}{self.path.name}"
        size = self.path.stat().st_size
        entry = {"key": key, "sha256": sha256_file(self.path), "bytes": size, "rows": self.rows_in_file}
        self.store.put_file(key, self.path)
        self.path.unlink()
        self.listed.append(entry)
        self.writer, self.path, self.rows_in_file = None, None, 0
        faults.checkpoint("export")  # a file is in the store, the manifest is not


def _stream(table: str, files: _Files, progress: Progress, total: int | None) -> int:
    read_fd, write_fd = os.pipe()
    with connection.cursor() as cursor:
        copy = _CopyPipe(cursor.cursor, f"COPY ({schema.select_sql(table)}) TO STDOUT (FORMAT csv)", write_fd)
        copy.start()
        done = 0
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        source = os.fdopen(read_fd, "rb", buffering=1 << 20)
        try:
            reader = pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(column_names=list(schema.NAMES), block_size=8 << 20, use_threads=True),
                # Syslog messages may hold newlines: quoted values may span lines.
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: _CSV_TYPES.get(name, pa.string()) for name in schema.NAMES},
                    strings_can_be_null=False,  # COPY writes '' as "" and NULL as nothing: only NULL is null
                    null_values=[""],
                ),
            )
            for batch in reader:
                pending.append(_to_archive(batch))
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    files.write(pa.Table.from_batches(pending))
                    done += pending_rows
                    pending, pending_rows = [], 0
                    progress.update(done, total, f"export {table}")
            if pending:
                files.write(pa.Table.from_batches(pending))
                done += pending_rows
        finally:
            source.close()  # a failed reader unblocks the COPY thread (EPIPE) rather than leaving it hanging
            copy.join()
        if copy.error is not None:
            raise copy.error
    files.close()
    return done


def export(store: ArchiveStore, target: Target, *, who: str, run_id: int | None, progress: Progress) -> dict[str, Any]:
    """Write the files and then the manifest of ``target``; returns the manifest."""
    schema.check_columns(target.table)
    started = datetime.now(UTC)
    scratch = Path(settings.MUTT_DATA_DIR) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    outermost = not connection.in_atomic_block
    with tempfile.TemporaryDirectory(dir=scratch, prefix="archive-") as folder, transaction.atomic():
        files = _Files(store, target, Path(folder))
        if outermost:
            with connection.cursor() as cursor:
                # One snapshot for the count/checksum and the COPY: a late insert cannot make them disagree.
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("SELECT pg_export_snapshot()")
                summarizer = _Summary(target.table, cursor.fetchone()[0])
            summarizer.start()
            written = _stream(target.table, files, progress, None)
            summary = summarizer.summary()
        else:  # inside a caller's transaction (a test's): one after the other, same transaction
            summary = schema.summarize_table(target.table)
            written = _stream(target.table, files, progress, summary.rows)
    if written != summary.rows:
        raise RuntimeError(f"export of {target.table} wrote {written} rows but PostgreSQL counted {summary.rows}")
    manifest = {
        "format": "mutt-event-archive",
        "schema_version": schema.SCHEMA_VERSION,
        "partition": target.table,
        "range_start": target.range_start.isoformat(),
        "range_end": target.range_end.isoformat(),
        **summary.as_dict(),
        "checksum_method": "sum of md5 halves mod 2^64 over canonical rows (retention/archive/schema.py)",
        "files": files.listed,
        "columns": [{"name": name, "type": str(kind)} for name, kind, _ in schema.COLUMNS],
        "exported_by": who,
        "run_id": run_id,
        "export_started_at": started.isoformat(),
        "exported_at": datetime.now(UTC).isoformat(),
    }
    store.put_bytes(manifest_key(target.prefix), json.dumps(manifest, indent=2).encode())
    return manifest
