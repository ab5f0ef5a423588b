"""SIGKILL of the archival process at every stage: the partition intact, or a verified archive and no
partition; never neither. The next run finishes the work, with no row lost and none archived twice."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from django.conf import settings as django_settings

from retention.archive import cli
from retention.archive.lifecycle import expected
from retention.archive.policy import ArchivesPolicy
from retention.archive.schema import summarize_table
from retention.archive.store import get_store
from retention.archive.verify import compare, read_back, read_manifest
from retention.models import ArchivedPartition, ArchiveState, RetentionRun, RunOutcome
from tests.support.archive import NoProgress, fill, make_partition, month, rows_of, table_state
from tests.support.s3_server import ACCESS_KEY, SECRET_KEY

NOW = "2020-06-15T00:00:00+00:00"
BASE = django_settings.BASE_DIR


def child(env: dict[str, str], policy: str = "events", kill_at: str | None = None) -> int:
    env = dict(env)
    if kill_at:
        env["MUTT_ARCHIVE_KILL_AT"] = kill_at
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.archive_child", policy, NOW],
        env=env, cwd=BASE, capture_output=True, timeout=120,
    )  # fmt: skip
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(done.stdout.decode() + done.stderr.decode())
    return done.returncode


@pytest.fixture
def s3_child_env(child_env, s3_store):
    return {
        **child_env,
        "MUTT_ARCHIVE_URL": f"s3://{s3_store['bucket']}/{s3_store['prefix']}",
        "MUTT_ARCHIVE_S3_ENDPOINT": s3_store["endpoint"],
        "ARCHIVE_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "ARCHIVE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }


@pytest.mark.parametrize("stage", ["export", "verify", "detach", "drop"])
def test_a_kill_at_each_stage_loses_nothing_and_the_next_run_finishes(archive_db, s3_store, s3_child_env, stage):
    name = make_partition(month(2020, 1), month(2020, 2))
    fill(month(2020, 1), 2_000, seconds_apart=1200)
    before = rows_of(name)
    checksum = summarize_table(name).checksum

    assert child(s3_child_env, kill_at=stage) == -signal.SIGKILL

    killed = RetentionRun.objects.get()
    assert killed.outcome == RunOutcome.RUNNING  # what a killed run leaves; the next run is the proof
    archive = ArchivedPartition.objects.get(partition=name)
    where = table_state(name)
    if where == "missing":  # the partition is gone only behind an archive that verifies
        assert archive.state in (ArchiveState.VERIFIED, ArchiveState.DETACHED)
        compare(read_back(get_store(), read_manifest(get_store(), archive.manifest_key), NoProgress()),
                expected(archive), "after the kill")  # fmt: skip
    else:
        assert rows_of(name) == before  # intact, attached or detached

    assert child(s3_child_env) == 0

    assert table_state(name) == "missing"
    archives = list(ArchivedPartition.objects.filter(partition=name))
    assert [(a.generation, a.state, a.rows, a.content_checksum) for a in archives] == [
        (1, ArchiveState.DROPPED, 2_000, checksum)
    ]
    keys = sorted(get_store().keys(""))
    assert keys == sorted([archives[0].manifest_key] + [f["key"] for f in archives[0].files])  # no stray file
    finished = RetentionRun.objects.exclude(pk=killed.pk).get()
    assert finished.outcome == RunOutcome.DONE
    assert finished.rows_deleted == 2_000  # the deletion is on the record of the run that completed it
    cli.restore({"from": "2020-01", "to": "2020-01", "reason": "after the crash"}, io.StringIO())
    assert rows_of("rules_eventauditlog_restored") == before


def test_a_kill_while_archives_expire_is_finished_by_the_next_run(archive_db, s3_store, s3_child_env):
    name = make_partition(month(2019, 1), month(2019, 2))
    fill(month(2019, 1), 50)
    assert child(s3_child_env) == 0
    archive = ArchivedPartition.objects.get(partition=name)
    manifest = json.loads(get_store().get_bytes(archive.manifest_key))
    assert manifest["rows"] == 50

    later = "2026-03-01T00:00:00+00:00"
    env = {**s3_child_env, "MUTT_ARCHIVE_KILL_AT": "expire"}
    killed = subprocess.run([sys.executable, "-m", "tests.support.archive_child", "archives", later],
                            env=env, cwd=BASE, capture_output=True, timeout=120)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert get_store().keys("") == []  # files gone ...
    assert ArchivedPartition.objects.get(pk=archive.pk).state == ArchiveState.DROPPED  # ... not yet recorded

    run = RetentionRun.objects.create(policy="archives", actor="cli:test", reason="test")
    ArchivesPolicy().apply(run, datetime(2026, 3, 1, tzinfo=UTC), hold=False, progress=NoProgress())
    assert ArchivedPartition.objects.get(pk=archive.pk).state == ArchiveState.EXPIRED
    assert run.rows_deleted == 50
