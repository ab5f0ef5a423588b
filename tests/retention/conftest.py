"""Fixtures of the archival tests (defined in tests/support/archive.py, shared with the benchmarks' checks)."""

from tests.support.archive import archive_db, folder_store, s3_store  # noqa: F401
