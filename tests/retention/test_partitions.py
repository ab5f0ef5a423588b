"""Partitions of the event audit log by month or day, and the job that keeps them ahead of the calendar."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime

import pytest
from django.db import connection

from core.audit import Actor
from core.jobs import JobOutcome, get_job
from retention.partitions import DEFAULT, TABLE, ensure_partitions, list_partitions, month_start, partition_name
from retention.runner import JobRunner
from tests.retention.partition_helpers import change_settings, rows_in, spans

__all__ = ["change_settings"]  # a fixture

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


def test_the_partitions_job_makes_a_month_whose_rows_are_in_the_default_partition_from_those_rows():
    coming = month_start(datetime.now(UTC).date(), 2)
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute(f'DROP TABLE IF EXISTS "{partition_name(coming)}"')
    audit_row_at(datetime(coming.year, coming.month, 2, tzinfo=UTC))
    job = get_job("audit_partitions")
    result = JobRunner([job], actor=Actor.cli("partition-tests")).run_now(job)
    assert result.outcome is JobOutcome.DONE, result
    assert result.details["moved"] == {partition_name(coming): 1}
    assert result.details["attached"] == [partition_name(coming)]
    assert result.details["blocked"] == []
    assert result.summary == f"created {partition_name(coming)} (1 rows moved from the default partition)"
    assert rows_in(partition_name(coming)) == 1
    assert rows_in(DEFAULT) == 0


def test_months_ahead_come_from_the_setting_read_at_each_call(change_settings):
    assert len(ensure_partitions(today=date(2034, 1, 20)).created) == 3, "the default: this month and two more"
    change_settings(partition_months_ahead=5)
    created = ensure_partitions(today=date(2034, 1, 20)).created
    assert created == [partition_name(date(2034, month, 1)) for month in (4, 5, 6)]
    assert spans()[-1] == (partition_name(date(2034, 6, 1)), "2034-06-01", "2034-07-01")


def test_day_partitions_run_from_today_to_the_same_horizon_as_months(change_settings):
    change_settings(partition_interval="day", partition_months_ahead=1)
    created = ensure_partitions(today=date(2035, 11, 29)).created
    assert created[:3] == [f"{TABLE}_y2035m11d29", f"{TABLE}_y2035m11d30", f"{TABLE}_y2035m12d01"]
    assert len(created) == 2 + 31
    made = [s for s in spans() if s[1] >= "2035-11-29" and s[2] <= "2036-01-01"]
    assert made[0] == (f"{TABLE}_y2035m11d29", "2035-11-29", "2035-11-30")
    assert made[-1] == (f"{TABLE}_y2035m12d31", "2035-12-31", "2036-01-01")
    assert ensure_partitions(today=date(2035, 11, 29)).created == []


def test_switching_months_to_days_keeps_the_months_made_and_starts_days_after_them(change_settings):
    ensure_partitions(months_ahead=2, today=date(2036, 3, 10), interval="month")  # March, April, May
    change_settings(partition_interval="day")
    assert ensure_partitions(months_ahead=2, today=date(2036, 3, 10)).created == [], "March to May exist"
    created = ensure_partitions(months_ahead=2, today=date(2036, 4, 2)).created
    assert created[0] == f"{TABLE}_y2036m06d01"
    assert len(created) == 30
    names = [s[0] for s in spans() if "2036-03-01" <= s[1] < "2036-07-01"]
    assert names[:3] == [partition_name(date(2036, m, 1)) for m in (3, 4, 5)], "the months stay whole"
    assert_no_overlap()


def test_switching_days_to_months_starts_the_month_after_the_last_day_made(change_settings):
    ensure_partitions(months_ahead=0, today=date(2037, 8, 25), interval="day")  # Aug 25..31
    ensure_partitions(months_ahead=0, today=date(2037, 8, 1), interval="day")  # and Aug 1..24: the whole month by day
    with connection.cursor() as cursor:  # a site that switched mid-month: days made up to the 12th only
        for day in range(13, 32):
            cursor.execute(f'DROP TABLE "{TABLE}_y2037m08d{day:02d}"')
    change_settings(partition_interval="month")
    created = ensure_partitions(months_ahead=1, today=date(2037, 8, 10)).created
    assert created == [f"{TABLE}_y2037m08d13", partition_name(date(2037, 9, 1))]
    assert (f"{TABLE}_y2037m08d13", "2037-08-13", "2037-09-01") in spans(), "the rest of August, in one"
    assert_no_overlap()


def test_an_interval_other_than_month_or_day_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="partition_interval: 'week' is not one of month, day"):
        ensure_partitions(today=date(2038, 1, 1), interval="week")


def assert_no_overlap() -> None:
    ranges = sorted((s[1], s[2]) for s in spans())
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end <= start, ranges


def test_list_partitions_gives_the_default_first_then_the_ranges_in_order():
    ensure_partitions(months_ahead=1, today=date(2039, 5, 5), interval="month")
    ensure_partitions(months_ahead=0, today=date(2039, 7, 30), interval="day")
    audit_row_at(datetime(2039, 5, 6, tzinfo=UTC))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")
    partitions = list_partitions()
    assert partitions[0].name == DEFAULT
    assert partitions[0].is_default
    assert (partitions[0].start, partitions[0].end) == (None, None)
    starts = [p.start for p in partitions[1:] if p.start is not None]
    assert len(starts) == len(partitions) - 1
    assert starts == sorted(starts)
    may = next(p for p in partitions if p.name == partition_name(date(2039, 5, 1)))
    assert (may.start, may.end) == (datetime(2039, 5, 1, tzinfo=UTC), datetime(2039, 6, 1, tzinfo=UTC))
    assert may.row_estimate == 1
    assert may.bytes > 0
    day = next(p for p in partitions if p.name == f"{TABLE}_y2039m07d31")
    assert (day.start, day.end) == (datetime(2039, 7, 31, tzinfo=UTC), datetime(2039, 8, 1, tzinfo=UTC))
