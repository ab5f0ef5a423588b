"""Fixtures of the archival tests (defined in tests/support/archive.py, shared with the benchmarks' checks)."""

import pytest

from core.redis import key
from tests.support.archive import archive_db, folder_store, s3_store  # noqa: F401


@pytest.fixture
def no_job_state(redis_client):
    """No job lock, due time or run count left in Redis before or after the test (the jobs' tests use it)."""

    def clean() -> None:
        names = list(redis_client.scan_iter(match=key("jobs", "*")))
        if names:
            redis_client.delete(*names)

    clean()
    yield
    clean()
