"""Monthly partitions of the event audit log, and the job that keeps them ahead of the calendar."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from django.db import connection

from core.audit import Actor
from core.jobs import JobOutcome, get_job
from retention.partitions import ensure_partitions, month_start, partition_name
from retention.runner import JobRunner

pytestmark = pytest.mark.django_db


def exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        return cursor.fetchone()[0] is not None


def audit_row_at(moment: datetime) -> None:
    """One audit row at ``moment``: with no partition for its month, it lands in the default one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, handling, raw)"
            " VALUES (%s, %s, %s, 'edge-001', 'prod', 'no_match', '{}')",
            [uuid.uuid4(), moment, moment],
        )


def test_partitions_are_created_months_ahead_and_only_once():
    created = ensure_partitions(months_ahead=2, today=date(2031, 12, 15)).created
    assert created == [
        partition_name(date(2031, 12, 1)),
        partition_name(date(2032, 1, 1)),
        partition_name(date(2032, 2, 1)),
    ]
    assert ensure_partitions(months_ahead=2, today=date(2031, 12, 15)).created == []
    assert exists(partition_name(date(2032, 2, 1)))


def test_a_month_whose_rows_are_in_the_default_partition_is_skipped_and_the_others_are_made():
    audit_row_at(datetime(2033, 4, 10, tzinfo=UTC))
    check = ensure_partitions(months_ahead=2, today=date(2033, 3, 15))
    assert check.blocked == [partition_name(date(2033, 4, 1))]
    assert check.created == [partition_name(date(2033, 3, 1)), partition_name(date(2033, 5, 1))]


def test_the_partitions_job_keeps_this_month_and_the_next_two_and_then_finds_nothing_to_do():
    job = get_job("audit_partitions")
    runner = JobRunner([job], actor=Actor.cli("partition-tests"))
    first = runner.run_now(job)
    assert first.outcome in (JobOutcome.DONE, JobOutcome.IDLE)  # the migration made this month and the next
    today = datetime.now(UTC).date()
    assert all(exists(partition_name(month_start(today, offset))) for offset in range(3))
    again = runner.run_now(job)
    assert (again.outcome, again.summary) == (JobOutcome.IDLE, "every partition exists")


def test_the_partitions_job_fails_when_a_month_cannot_be_made():
    coming = month_start(datetime.now(UTC).date(), 2)
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute(f'DROP TABLE IF EXISTS "{partition_name(coming)}"')
    audit_row_at(datetime(coming.year, coming.month, 2, tzinfo=UTC))
    job = get_job("audit_partitions")
    result = JobRunner([job], actor=Actor.cli("partition-tests")).run_now(job)
    assert result.outcome is JobOutcome.FAILED
    assert result.details["blocked"] == [partition_name(coming)]
