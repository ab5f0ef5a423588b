"""Archival against a real S3-compatible server (moto in server mode), and the store being unreachable."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import pyarrow.parquet as pq

from retention.archive import cli, export
from retention.archive.policy import EventsPolicy
from retention.archive.schema import summarize_table
from retention.archive.store import S3Store, get_store
from retention.models import ArchivedPartition, ArchiveState, RunOutcome
from tests.support.archive import fill, make_partition, month, rows_of, run_policy, table_state
from tests.support.s3_server import SECRET_KEY, free_port

NOW = datetime(2020, 6, 15, tzinfo=UTC)


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text


def test_a_month_goes_to_the_bucket_and_comes_back_identical(archive_db, s3_store, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    # Row groups of 500 rows: the verifier checksums the file's six row groups in worker processes.
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 500)
    name = make_partition(month(2020, 1), month(2020, 2))
    fill(month(2020, 1), 3_000, seconds_apart=600)
    before = rows_of(name)
    checksum = summarize_table(name).checksum
    assert isinstance(get_store(), S3Store)

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.DONE, run.error
    assert table_state(name) == "missing"
    archive = ArchivedPartition.objects.get(partition=name)
    assert archive.state == ArchiveState.DROPPED
    assert archive.store.startswith(f"s3://{s3_store['bucket']}/audit")
    listed = s3_store["client"].list_objects_v2(Bucket=s3_store["bucket"])["Contents"]
    assert sorted(item["Key"] for item in listed) == [
        f"audit/events/{name}/g1/manifest.json",
        f"audit/events/{name}/g1/part-00000.parquet",
    ]
    assert run.details["store"] == archive.store
    assert archive.files[0]["rows"] == 3_000
    parquet = s3_store["client"].get_object(Bucket=s3_store["bucket"], Key=f"audit/{archive.files[0]['key']}")
    assert pq.ParquetFile(io.BytesIO(parquet["Body"].read())).num_row_groups == 6

    cli.restore({"from": "2020-01", "to": "2020-01", "reason": "inquiry"}, Lines())
    assert rows_of("rules_eventauditlog_restored") == before
    assert summarize_table("rules_eventauditlog_restored").checksum == checksum
    assert SECRET_KEY not in caplog.text  # boto3 logs at DEBUG; the credential never appears


def test_an_unreachable_s3_server_fails_the_run_and_drops_nothing(archive_db, s3_store, settings):
    settings.MUTT_ARCHIVE_S3_ENDPOINT = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    name = make_partition(month(2019, 12), month(2020, 1))
    fill(month(2019, 12), 20)

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.FAILED
    assert "cannot reach (bucket)" in run.error
    assert SECRET_KEY not in run.error
    assert table_state(name) == "attached"
    assert len(rows_of(name)) == 20
    assert not ArchivedPartition.objects.exists()


def test_a_missing_bucket_fails_the_run_and_drops_nothing(archive_db, s3_store, settings):
    settings.MUTT_ARCHIVE_URL = "s3://no-such-bucket-for-mutt/audit"
    name = make_partition(month(2019, 10), month(2019, 11))
    fill(month(2019, 10), 20)

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.FAILED
    assert "no-such-bucket-for-mutt" in run.error
    assert table_state(name) == "attached"
