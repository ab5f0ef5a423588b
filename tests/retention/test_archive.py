"""Archival of the event audit log into a folder store: export, verify, drop, restore, expiry, hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
from django.db import connection

from core.audit import Actor
from retention.archive import cli
from retention.archive.policy import ArchivesPolicy, EventsPolicy
from retention.archive.schema import summarize_table
from retention.models import ArchivedPartition, ArchiveState, RetentionRun, RunOutcome
from tests.support.archive import fill, make_partition, month, rows_of, run_policy, table_state
from tests.support.waiting import apply_setting

NOW = datetime(2020, 6, 15, tzinfo=UTC)  # with the default 90 days, every month before March 2020 expired


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text


def test_an_expired_month_is_archived_verified_dropped_and_restored_with_identical_rows(archive_db, folder_store):
    name = make_partition(month(2020, 1), month(2020, 2))
    fill(month(2020, 1), 5_000, seconds_apart=300)
    before = rows_of(name)
    checksum = summarize_table(name).checksum
    current = make_partition(month(2020, 5), month(2020, 6))  # not expired: must stay
    fill(month(2020, 5), 10)

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.DONE, run.error
    assert (run.rows_archived, run.rows_deleted) == (5_000, 5_000)
    assert run.bytes_deleted > 0
    assert run.bytes_archived > 0
    assert table_state(name) == "missing"
    assert table_state(current) == "attached"
    archive = ArchivedPartition.objects.get(partition=name)
    assert (archive.state, archive.rows, archive.content_checksum) == (ArchiveState.DROPPED, 5_000, checksum)
    assert archive.min_id == before[0][0]
    assert archive.max_id == before[-1][0]
    manifest = json.loads((folder_store / archive.manifest_key).read_text())
    assert manifest["rows"] == 5_000
    assert manifest["exported_by"] == "cli:test"
    assert manifest["run_id"] == run.pk
    assert manifest["range_start"] == "2020-01-01T00:00:00+00:00"
    assert manifest["schema_version"] == 1
    parquet = pq.ParquetFile(folder_store / archive.files[0]["key"])
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    steps = [entry["step"] for entry in run.details["partitions"]]
    assert steps == ["exported", "verified", "detached", "dropped"]

    out = Lines()
    restore_run = cli.restore({"from": "2020-01", "to": "2020-01", "reason": "case 42", "actor": Actor.cli("ann")}, out)
    assert restore_run.outcome == RunOutcome.DONE
    assert restore_run.actor == "cli:ann"
    assert "restored 5000 rows, checksum matches" in out.text
    assert rows_of("rules_eventauditlog_restored") == before  # every column, raw verbatim, same ids
    assert summarize_table("rules_eventauditlog_restored", where=f"restored_from = {archive.pk}").checksum == checksum

    again = Lines()
    cli.restore({"from": "2020-01", "to": "2020-02", "reason": "case 42"}, again)
    assert "already restored" in again.text
    assert len(rows_of("rules_eventauditlog_restored")) == 5_000

    gone = cli.drop_restored({"reason": "case 42 closed"}, Lines())
    assert gone.rows_deleted == 5_000
    assert table_state("rules_eventauditlog_restored") == "missing"


def test_restore_needs_a_reason_and_months(archive_db, folder_store):
    with pytest.raises(ValueError, match=r"^reason"):
        cli.restore({"from": "2020-01", "to": "2020-01", "reason": ""}, Lines())
    with pytest.raises(ValueError, match=r"^from"):
        cli.restore({"from": "2020/01", "to": "2020-01", "reason": "x"}, Lines())
    with pytest.raises(ValueError, match=r"^to"):
        cli.restore({"from": "2020-03", "to": "2020-01", "reason": "x"}, Lines())


def test_the_legal_hold_exports_and_verifies_but_drops_nothing_and_the_next_run_drops(archive_db, folder_store):
    name = make_partition(month(2019, 11), month(2019, 12))
    fill(month(2019, 11), 300)

    held = run_policy(EventsPolicy(), NOW, hold=True)

    assert held.outcome == RunOutcome.HELD
    assert held.rows_deleted == 0
    assert held.rows_archived == 300
    assert table_state(name) == "attached"
    assert len(rows_of(name)) == 300
    assert ArchivedPartition.objects.get(partition=name).state == ArchiveState.VERIFIED
    assert held.details["held"] == [name]

    released = run_policy(EventsPolicy(), NOW)
    assert released.outcome == RunOutcome.DONE
    assert released.rows_deleted == 300
    assert released.rows_archived == 0
    assert table_state(name) == "missing"
    assert ArchivedPartition.objects.get(partition=name).state == ArchiveState.DROPPED


def test_event_retention_days_changed_at_run_time_decides_what_expires(archive_db, folder_store):
    name = make_partition(month(2020, 2), month(2020, 3))  # ended 106 days before NOW
    fill(month(2020, 2), 50)
    apply_setting("event_retention_days", 120)
    assert EventsPolicy().plan(NOW) == []
    run = run_policy(EventsPolicy(), NOW)
    assert run.outcome == RunOutcome.DONE
    assert table_state(name) == "attached"

    apply_setting("event_retention_days", 100)
    assert [item.target for item in EventsPolicy().plan(NOW)] == [name]
    run = run_policy(EventsPolicy(), NOW)
    assert run.rows_deleted == 50
    assert table_state(name) == "missing"


def test_a_file_changed_in_the_store_is_rejected_and_the_partition_kept(archive_db, folder_store, monkeypatch):
    name = make_partition(month(2019, 6), month(2019, 7))
    fill(month(2019, 6), 200)
    run_policy(EventsPolicy(), NOW, hold=True)  # exported and verified, partition kept by the hold
    archive = ArchivedPartition.objects.get(partition=name)
    # Back to "exported" as a killed run leaves it, then a bit flips in the stored file.
    ArchivedPartition.objects.filter(pk=archive.pk).update(state=ArchiveState.EXPORTED)
    path = folder_store / archive.files[0]["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.FAILED
    assert "SHA-256" in run.error
    assert table_state(name) == "attached"
    assert len(rows_of(name)) == 200
    assert ArchivedPartition.objects.get(pk=archive.pk).state == ArchiveState.REJECTED
    # The next run archives the partition afresh, as generation 2, and drops it once that one verifies.
    retry = run_policy(EventsPolicy(), NOW)
    assert retry.outcome == RunOutcome.DONE, retry.error
    assert ArchivedPartition.objects.get(partition=name, generation=2).state == ArchiveState.DROPPED


def test_well_formed_files_with_different_content_are_rejected_by_the_content_checksum(archive_db, folder_store):
    name = make_partition(month(2019, 5), month(2019, 6))
    fill(month(2019, 5), 200)
    run_policy(EventsPolicy(), NOW, hold=True)
    archive = ArchivedPartition.objects.get(partition=name)
    ArchivedPartition.objects.filter(pk=archive.pk).update(state=ArchiveState.EXPORTED)
    # A valid Parquet file with one message changed, and a manifest whose SHA-256 matches it: only the
    # comparison of the decoded rows with PostgreSQL's checksum can catch it.
    path = folder_store / archive.files[0]["key"]
    table = pq.read_table(path)
    messages = table.column("message").to_pylist()
    messages[7] = messages[7] + "!"
    table = table.set_column(table.schema.get_field_index("message"), "message", [messages])
    pq.write_table(table, path, compression="zstd")
    from retention.archive.store import sha256_file

    manifest_path = folder_store / archive.manifest_key
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["sha256"] = sha256_file(path)
    manifest_path.write_text(json.dumps(manifest))

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.FAILED
    assert "content_checksum" in run.error
    assert table_state(name) == "attached"
    assert len(rows_of(name)) == 200


def test_rows_that_arrive_after_the_export_are_archived_before_the_drop(archive_db, folder_store):
    name = make_partition(month(2019, 8), month(2019, 9))
    fill(month(2019, 8), 100)
    run_policy(EventsPolicy(), NOW, hold=True)  # verified with 100 rows
    fill(datetime(2019, 8, 20, tzinfo=UTC), 3)  # a device with a slow clock reports late

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.DONE, run.error
    archive = ArchivedPartition.objects.get(partition=name)
    assert (archive.state, archive.rows, archive.generation) == (ArchiveState.DROPPED, 103, 1)
    assert [e["step"] for e in run.details["partitions"]][:3] == ["detached", "changed_after_export", "exported"]


def test_an_unreachable_store_fails_the_run_and_drops_nothing(archive_db, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    settings.MUTT_ARCHIVE_URL = str(blocker / "archive")
    name = make_partition(month(2019, 9), month(2019, 10))
    fill(month(2019, 9), 20)

    run = run_policy(EventsPolicy(), NOW)

    assert run.outcome == RunOutcome.FAILED
    assert "not writable" in run.error
    assert table_state(name) == "attached"
    assert not ArchivedPartition.objects.exists()


def test_archives_expire_after_archive_retention_days_unless_held(archive_db, folder_store):
    name = make_partition(month(2019, 1), month(2019, 2))
    fill(month(2019, 1), 40)
    run_policy(EventsPolicy(), NOW)
    archive = ArchivedPartition.objects.get(partition=name)
    later = datetime(2026, 3, 1, tzinfo=UTC)  # 2,585 days after the range ended: past the default 2,557
    assert [item.target for item in ArchivesPolicy().plan(later)] == [f"{name}#1"]

    held = run_policy(ArchivesPolicy(), later, hold=True)
    assert held.rows_deleted == 0
    assert (folder_store / archive.manifest_key).exists()

    apply_setting("archive_retention_days", 3000)
    assert ArchivesPolicy().plan(later) == []
    apply_setting("archive_retention_days", 2557)
    run = run_policy(ArchivesPolicy(), later)
    assert run.outcome == RunOutcome.DONE
    assert run.rows_deleted == 40
    assert run.bytes_deleted == archive.bytes
    assert run.details["expired"][0]["partition"] == name
    assert list(folder_store.rglob("*.parquet")) == []
    assert not (folder_store / archive.manifest_key).exists()
    assert ArchivedPartition.objects.get(pk=archive.pk).state == ArchiveState.EXPIRED
    assert RetentionRun.objects.filter(policy="archives").count() == 2
    out = Lines()
    cli.restore({"from": "2019-01", "to": "2019-01", "reason": "too late"}, out)
    assert "no archive holds events" in out.text


def test_a_month_archived_twice_keeps_both_generations_and_restores_both(archive_db, folder_store):
    name = make_partition(month(2019, 3), month(2019, 4))
    fill(month(2019, 3), 30)
    run_policy(EventsPolicy(), NOW)
    make_partition(month(2019, 3), month(2019, 4))  # the month's late rows made it again
    fill(datetime(2019, 3, 10, tzinfo=UTC), 5)
    run_policy(EventsPolicy(), NOW)
    generations = list(ArchivedPartition.objects.filter(partition=name).values_list("generation", "rows", "state"))
    assert sorted(generations) == [(1, 30, "dropped"), (2, 5, "dropped")]
    cli.restore({"from": "2019-03", "to": "2019-03", "reason": "audit"}, Lines())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT id), count(*) FROM rules_eventauditlog_restored")
        assert cursor.fetchone() == (35, 35)
