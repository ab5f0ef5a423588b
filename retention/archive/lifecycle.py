"""The life of one archive, as a state machine recorded in :class:`~retention.models.ArchivedPartition`.

Each step changes the world first and records it after; every state says what is true whatever
happened since, so a run killed at any point is finished by the next one:

============  ============================================  ===========================================
state         true in every case                            what the next step does
============  ============================================  ===========================================
exporting     the partition is intact; files may be partial deletes the files, exports again
exported      files + manifest in the store, unverified      reads them back and compares (else rejected)
verified      archive matches the partition (as exported)   DETACH (skipped if already detached)
detached      table out of the log, intact; archive valid   re-checks the table, DROP (skipped if gone)
dropped       only the archive holds the rows               nothing (ArchivesPolicy expires it one day)
============  ============================================  ===========================================

Before the DROP the detached table is summarised again by PostgreSQL and compared with the manifest:
rows that reached the partition after its export (a late event of that month) send the archive back to
``exporting``, from the detached table, which nothing can write to any more. No row is lost and no
row is in two valid archives: one generation of one partition is in progress at a time (a constraint).
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from retention.archive import ddl, faults, schema
from retention.archive.export import Target, export, manifest_key, prefix_for
from retention.archive.store import ArchiveStore
from retention.archive.verify import ArchiveMismatch, compare, verify
from retention.models import ArchivedPartition, ArchiveState, RetentionRun
from retention.policies import Progress

logger = logging.getLogger("mutt.retention.archive")

IN_PROGRESS = (ArchiveState.EXPORTING, ArchiveState.EXPORTED, ArchiveState.VERIFIED, ArchiveState.DETACHED)


def expected(archive: ArchivedPartition) -> dict[str, Any]:
    return {
        "rows": archive.rows,
        "min_id": archive.min_id,
        "max_id": archive.max_id,
        "content_checksum": archive.content_checksum,
    }


def _note(run: RetentionRun, archive: ArchivedPartition, step: str, **figures: Any) -> None:
    entries = run.details.setdefault("partitions", [])
    entries.append({"partition": archive.partition, "generation": archive.generation, "step": step, **figures})


def _export(archive: ArchivedPartition, store: ArchiveStore, run: RetentionRun, who: str, progress: Progress) -> None:
    prefix = prefix_for(archive.partition, archive.generation)
    for stale in store.keys(prefix):  # a killed export's partial files: never verified, never listed
        store.delete(stale)
    target = Target(archive.partition, archive.range_start, archive.range_end, prefix)
    manifest = export(store, target, who=who, run_id=run.pk, progress=progress)
    archive.files = manifest["files"]
    archive.rows, archive.min_id, archive.max_id = manifest["rows"], manifest["min_id"], manifest["max_id"]
    archive.content_checksum = manifest["content_checksum"]
    archive.bytes = sum(entry["bytes"] for entry in manifest["files"])
    archive.manifest_key = manifest_key(prefix)
    archive.schema_version = schema.SCHEMA_VERSION
    archive.state = ArchiveState.EXPORTED
    archive.run = run
    archive.save()
    run.rows_archived += archive.rows
    run.bytes_archived += archive.bytes
    _note(run, archive, "exported", rows=archive.rows, bytes=archive.bytes, files=archive.files)


def _verify(archive: ArchivedPartition, store: ArchiveStore, run: RetentionRun, progress: Progress) -> None:
    try:
        verify(store, archive.manifest_key, expected(archive), progress)
    except ArchiveMismatch as exc:
        archive.state = ArchiveState.REJECTED
        archive.save(update_fields=["state"])
        _note(run, archive, "rejected", error=str(exc))
        logger.error("archive of %s rejected, partition kept: %s", archive.partition, exc)
        raise
    faults.checkpoint("verify")  # verified, not yet recorded: the next run verifies again
    archive.state = ArchiveState.VERIFIED
    archive.verified_at = timezone.now()
    archive.save(update_fields=["state", "verified_at"])
    _note(run, archive, "verified", content_checksum=archive.content_checksum)


def _detach(archive: ArchivedPartition, run: RetentionRun) -> None:
    where = ddl.attachment(archive.partition)
    if where == "attached":
        seconds = ddl.detach(archive.partition)
        faults.checkpoint("detach")  # detached, not yet recorded: the next run sees it detached
        _note(run, archive, "detached", seconds=round(seconds, 4))
    archive.state = ArchiveState.DETACHED
    archive.save(update_fields=["state"])


def _drop(archive: ArchivedPartition, run: RetentionRun) -> bool:
    """DROP the detached table once it still matches the archive; False when it changed (re-export)."""
    if ddl.attachment(archive.partition) == "detached":
        try:
            compare(schema.summarize_table(archive.partition), expected(archive), f"{archive.partition} before DROP")
        except ArchiveMismatch as exc:
            logger.warning("%s changed after its export (%s): exporting it again", archive.partition, exc)
            archive.state = ArchiveState.EXPORTING
            archive.save(update_fields=["state"])
            _note(run, archive, "changed_after_export", error=str(exc))
            return False
        size = ddl.table_bytes(archive.partition)
        seconds = ddl.drop(archive.partition)
        faults.checkpoint("drop")  # dropped, not yet recorded: the next run finds the table missing
        run.bytes_deleted += size
        _note(run, archive, "dropped", rows=archive.rows, bytes=size, seconds=round(seconds, 4))
    archive.state = ArchiveState.DROPPED
    archive.dropped_at = timezone.now()
    archive.save(update_fields=["state", "dropped_at"])
    run.rows_deleted += archive.rows
    return True


def advance(
    archive: ArchivedPartition, *, store: ArchiveStore, run: RetentionRun, hold: bool, who: str, progress: Progress
) -> str:
    """Take ``archive`` as far as it may go now; returns the state it was left in."""
    while True:
        state = archive.state
        if state == ArchiveState.EXPORTING:
            _export(archive, store, run, who, progress)
        elif state == ArchiveState.EXPORTED:
            _verify(archive, store, run, progress)
        elif state == ArchiveState.VERIFIED:
            if hold:
                _note(run, archive, "held")
                return str(state)
            _detach(archive, run)
        elif state == ArchiveState.DETACHED:
            if hold:  # detached before the hold came on: the table is kept as it is, out of the log
                _note(run, archive, "held")
                return str(state)
            _drop(archive, run)
        else:
            return str(state)
