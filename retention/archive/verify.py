"""An archive read back from its store and compared with what PostgreSQL counted.

Independent of the export: the manifest and every file are fetched again from the store (not the
exporter's local copies), each file's SHA-256 is recomputed, the Parquet files are decoded by pyarrow's
reader, and the row count, id range and content checksum are computed from the decoded rows by
:class:`schema.Checksummer` and compared with PostgreSQL's own figures taken from the partition
(``summarize_table``). A fault anywhere between the table and the store's bytes (COPY parsing, type
conversion, Parquet encoding, upload) shows as a mismatch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from django.conf import settings

from retention.archive import schema
from retention.archive.store import ArchiveStore, sha256_file
from retention.policies import Progress


class ArchiveMismatch(RuntimeError):
    """The archive read back does not hold what the partition held."""


def read_manifest(store: ArchiveStore, key: str) -> dict[str, Any]:
    manifest = json.loads(store.get_bytes(key))
    if manifest.get("schema_version") != schema.SCHEMA_VERSION:
        raise ArchiveMismatch(f"{key}: schema version {manifest.get('schema_version')} is not {schema.SCHEMA_VERSION}")
    return dict(manifest)


# The verifier's MD5 per row is the slowest part of verification (~3 s per million rows on one core of the
# benchmark machine): the row groups of a file are checksummed by worker processes, one per core.
MAX_WORKERS = 8


def _checksum_file(local: Path, checksum: schema.Checksummer, workers: int) -> None:
    groups = pq.ParquetFile(local).num_row_groups
    if workers < 2 or groups < 2:
        schema.merge(checksum, schema.checksum_row_groups(str(local), list(range(groups))))
        return
    shares = [list(range(groups))[start::workers] for start in range(min(workers, groups))]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "retention.archive.checksum_worker", str(local), ",".join(map(str, share))],
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"checksum worker for {local.name} failed ({child.returncode}): {err.decode()[-500:]}")
        schema.merge(checksum, tuple(json.loads(out)))


def read_back(
    store: ArchiveStore, manifest: dict[str, Any], progress: Progress, *, label: str = "verify"
) -> schema.Summary:
    """Fetch and decode every file of ``manifest``; raise ArchiveMismatch on a file that is not as listed."""
    checksum = schema.Checksummer()
    scratch = Path(settings.MUTT_DATA_DIR) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="verify-") as folder:
        for entry in manifest["files"]:
            local = Path(folder) / Path(entry["key"]).name
            store.fetch(entry["key"], local)
            digest = sha256_file(local)
            if digest != entry["sha256"]:
                raise ArchiveMismatch(f"{entry['key']}: SHA-256 {digest} is not the manifest's {entry['sha256']}")
            before = checksum.rows
            _checksum_file(local, checksum, workers)
            progress.update(checksum.rows, manifest["rows"], label)
            if checksum.rows - before != entry["rows"]:
                raise ArchiveMismatch(
                    f"{entry['key']}: {checksum.rows - before} rows, the manifest says {entry['rows']}"
                )
            local.unlink()
    return checksum.summary()


def compare(found: schema.Summary, expected: dict[str, Any], what: str) -> None:
    """Raise ArchiveMismatch naming every figure of ``found`` that differs from ``expected``."""
    differences = [
        f"{name} {value!r} != {expected.get(name)!r}"
        for name, value in found.as_dict().items()
        if value != expected.get(name)
    ]
    if differences:
        raise ArchiveMismatch(f"{what}: {'; '.join(differences)}")


def verify(store: ArchiveStore, key: str, expected: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Check the archive whose manifest is ``key`` against ``expected`` (the inventory's figures)."""
    manifest = read_manifest(store, key)
    compare(
        schema.Summary(manifest["rows"], manifest["min_id"], manifest["max_id"], manifest["content_checksum"]),
        expected,
        f"manifest {key} against the inventory",
    )
    compare(read_back(store, manifest, progress), expected, f"files of {key} against the partition")
    return manifest
