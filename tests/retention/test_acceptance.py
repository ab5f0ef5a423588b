"""Issue 15's acceptance, through the operator's command: three months of history planned, archived,
verified and dropped, then one brought back with identical rows, and the restored table removed."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from retention.models import ArchivedPartition, ArchiveState, RetentionRun, RunOutcome
from tests.support.archive import archive_db, fill, folder_store, make_partition, month, rows_of, table_state

__all__ = ["archive_db", "folder_store"]  # fixtures

MONTHS = [(month(2019, 1), month(2019, 2)), (month(2019, 2), month(2019, 3)), (month(2019, 3), month(2019, 4))]
ROWS = [1_200, 800, 500]


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("retention", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def digest(rows: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.mark.usefixtures("archive_db", "folder_store")
def test_plan_run_restore_and_drop_restored_keep_every_row():
    names, before = [], {}
    for (start, end), count in zip(MONTHS, ROWS, strict=True):
        name = make_partition(start, end)
        fill(start, count, seconds_apart=60.0)
        names.append(name)
        before[name] = digest(rows_of(name))

    plan = command("plan", "--only", "events")
    for name in names:
        line = next(line for line in plan.splitlines() if name in line)
        assert "archive" in line, line
    assert all(table_state(name) == "attached" for name in names), "plan touched nothing"
    assert not ArchivedPartition.objects.exists()

    command("run", "--only", "events", "--reason", "acceptance of issue 15")

    run = RetentionRun.objects.get(policy="events", dry_run=False)
    assert (run.outcome, run.rows_archived, run.reason) == (RunOutcome.DONE, sum(ROWS), "acceptance of issue 15")
    assert run.actor.startswith("cli:")
    for name, count in zip(names, ROWS, strict=True):
        archive = ArchivedPartition.objects.get(partition=name)
        assert (archive.state, archive.rows) == (ArchiveState.DROPPED, count)
        assert all(len(file["sha256"]) == 64 for file in archive.files)
        assert table_state(name) == "missing"

    command("restore", "--from", "2019-02", "--to", "2019-02", "--reason", "inquiry 4711")

    restored = rows_of("rules_eventauditlog_restored")
    assert len(restored) == ROWS[1]
    assert digest(restored) == before[names[1]], "the month came back with identical rows"
    restore_run = RetentionRun.objects.get(policy="restore")
    assert restore_run.reason == "inquiry 4711"

    command("drop-restored", "--reason", "inquiry closed")
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('rules_eventauditlog_restored')")
        assert cursor.fetchone()[0] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "--from", "2019-02", "--to", "2019-02", "--reason", "  "], "--reason: say why"),
        (["drop-restored", "--reason", ""], "--reason: say why"),
    ],
)
def test_restore_and_drop_restored_need_a_reason(args, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        command(*args)
    assert not RetentionRun.objects.exists()
