"""Archived months loaded back into ``rules_eventauditlog_restored``, for an investigation.

The restored table is a plain table, never a partition of the live log: the alerter does not write to
it, retention does not touch it, and the live log's queries do not see it. It has the audit log's
columns plus ``restored_from`` (the id of the :class:`~retention.models.ArchivedPartition` the row came
from), so a month restored twice is detected and skipped, and each archive's rows are summarised by
PostgreSQL after loading and compared with its manifest: what was loaded is what was archived.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from django.conf import settings
from django.db import connection, transaction

from retention.archive import schema
from retention.archive.store import ArchiveStore, sha256_file
from retention.archive.verify import ArchiveMismatch, compare, read_manifest
from retention.models import ArchivedPartition, ArchiveState

RESTORED = "rules_eventauditlog_restored"
RESTORABLE = (ArchiveState.VERIFIED, ArchiveState.DETACHED, ArchiveState.DROPPED)


@dataclass(frozen=True)
class Loaded:
    archive: ArchivedPartition
    rows: int
    skipped: bool  # already in the restored table


def parse_month(value: str | None, field: str) -> datetime:
    """``YYYY-MM`` as the first instant of that month (UTC); a clear error naming ``field`` otherwise."""
    try:
        year, month = (int(part) for part in (value or "").split("-"))
        return datetime(year, month, 1, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{field}: expected a month as YYYY-MM, got {value!r}") from None


def next_month(moment: datetime) -> datetime:
    return moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)


def archives_between(start: datetime, end: datetime) -> list[ArchivedPartition]:
    """The valid archives whose range overlaps [start, end), oldest first."""
    return list(
        ArchivedPartition.objects.filter(state__in=RESTORABLE, range_start__lt=end, range_end__gt=start).order_by(
            "range_start", "generation"
        )
    )


def ensure_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE IF NOT EXISTS "{RESTORED}" (LIKE "{schema.TABLE}" INCLUDING DEFAULTS, '
            "restored_from bigint NOT NULL)"
        )
        cursor.execute(f'CREATE INDEX IF NOT EXISTS "{RESTORED}_time" ON "{RESTORED}" (event_time)')
        cursor.execute(f'CREATE INDEX IF NOT EXISTS "{RESTORED}_from" ON "{RESTORED}" (restored_from)')


def restored_table_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [RESTORED])
        return cursor.fetchone()[0] is not None


def _copy_in(local: Path, archive_id: int) -> int:
    columns = ", ".join([*schema.NAMES, "restored_from"])
    rows = 0
    with connection.cursor() as cursor:
        for read in pq.ParquetFile(local).iter_batches(batch_size=65_536):
            batch = read.append_column("restored_from", pa.array([archive_id] * read.num_rows, pa.int64()))
            buffer = io.BytesIO()
            # Nulls come out as nothing and empty strings as "": COPY's CSV reads them back as NULL and ''.
            pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
            buffer.seek(0)
            cursor.cursor.copy_expert(f'COPY "{RESTORED}" ({columns}) FROM STDIN (FORMAT csv)', buffer)
            rows += batch.num_rows
    return rows


def load(store: ArchiveStore, archive: ArchivedPartition) -> Loaded:
    """Load one archive into the restored table, checked against its manifest (all or nothing)."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT EXISTS (SELECT 1 FROM "{RESTORED}" WHERE restored_from = %s)', [archive.pk])  # noqa: S608 (names from the catalogue or constants, values bound)
        if cursor.fetchone()[0]:
            return Loaded(archive, 0, True)
    manifest = read_manifest(store, archive.manifest_key)
    scratch = Path(settings.MUTT_DATA_DIR) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    rows = 0
    with tempfile.TemporaryDirectory(dir=scratch, prefix="restore-") as folder, transaction.atomic():
        for entry in manifest["files"]:
            local = Path(folder) / Path(entry["key"]).name
            store.fetch(entry["key"], local)
            if sha256_file(local) != entry["sha256"]:
                raise ArchiveMismatch(f"{entry['key']}: SHA-256 differs from the manifest; nothing restored")
            rows += _copy_in(local, archive.pk)
            local.unlink()
        found = schema.summarize_table(RESTORED, where=f"restored_from = {int(archive.pk)}")
        # Raising here rolls the whole archive's rows back: a restore is complete and checked, or absent.
        compare(found, manifest, f"rows restored from {archive.manifest_key}")
    return Loaded(archive, rows, False)


def restored_summary() -> list[dict[str, Any]]:
    """Per archive in the restored table: its partition and the rows loaded from it."""
    if not restored_table_exists():
        return []
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT restored_from, count(*) FROM "{RESTORED}" GROUP BY 1 ORDER BY 1')  # noqa: S608 (names from the catalogue or constants, values bound)
        counts = dict(cursor.fetchall())
    names = dict(ArchivedPartition.objects.filter(pk__in=counts).values_list("pk", "partition"))
    return [{"archive": pk, "partition": names.get(pk, "?"), "rows": rows} for pk, rows in counts.items()]


def drop_table() -> list[dict[str, Any]]:
    held = restored_summary()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{RESTORED}"')
    return held
