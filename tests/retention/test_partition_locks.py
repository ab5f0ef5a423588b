"""What partition making locks, and how long, against a real PostgreSQL with other sessions holding locks:
a table left pending does not break the next run, making a partition ahead does not lock the log, the
attach moves only what arrived after a short batch and gives up rather than hold the default partition long."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections

from retention.partition_moves import move_default_rows
from retention.partitions import DEFAULT, TABLE, ensure_partitions, partition_name, pending_tables
from tests.retention.partition_helpers import (
    INSERT_ROW,
    all_event_ids,
    audit_rows_at,
    clean_partitions,
    rows_in,
    spans,
)

__all__ = ["clean_partitions"]  # fixtures

pytestmark = pytest.mark.usefixtures("clean_partitions")

JAN = datetime(2043, 1, 1, tzinfo=UTC)


@pytest.fixture
def open_insert() -> Iterator[object]:
    """``open_insert(moment)``: another session (an alerter mid-COPY) inserts a row at ``moment`` and keeps
    its transaction open until the test ends, holding ROW EXCLUSIVE on the log and the partition routed to."""
    holder = connections.create_connection("default")
    holder.set_autocommit(False)

    def insert(moment: datetime) -> None:
        with holder.cursor() as cursor:
            cursor.execute(INSERT_ROW, [uuid.uuid4(), moment, moment, "holder"])

    try:
        yield insert
    finally:
        holder.rollback()
        holder.close()


def test_a_table_left_pending_with_rows_arriving_in_its_range_does_not_break_the_next_run():
    name = partition_name(JAN.date())
    ids = audit_rows_at([JAN + timedelta(days=1)])
    holder = connections.create_connection("default")  # an alerter mid-COPY: holds the default partition
    holder.set_autocommit(False)
    try:
        with holder.cursor() as cursor:
            cursor.execute(INSERT_ROW, [uuid.uuid4(), "2050-01-01Z", "2050-01-01Z", "holder"])
        report = move_default_rows(interval="month", lock_timeout_ms=50, attach_attempts=1)
        assert report.pending == [name]

        ids += audit_rows_at([JAN + timedelta(days=2)])

        def arrive(table: str, rows: int) -> None:  # a row of the pending range audited after its last batch
            if len(ids) == 2:
                ids.extend(audit_rows_at([JAN + timedelta(days=19)]))

        again = move_default_rows(interval="month", lock_timeout_ms=50, attach_attempts=1, after_batch=arrive)
        assert again.pending == [name], "still pending, not a crash on a day its range holds"
        assert again.attached == []
        assert [n for n, _ in pending_tables()] == [name], "no second table for the range"
        assert rows_in(DEFAULT) == 1, "the late row waits in the default partition for the next run"
    finally:
        holder.rollback()
        holder.close()
    done = move_default_rows(interval="month")
    assert done.attached == [name]
    assert (rows_in(name), rows_in(DEFAULT)) == (3, 0)
    assert sorted(all_event_ids()) == sorted(ids)


def test_making_a_partition_ahead_does_not_wait_on_an_open_insert_into_another_partition(open_insert):
    ensure_partitions(months_ahead=0, today=JAN.date(), interval="month")
    open_insert(JAN + timedelta(days=5))  # an open insert into January (not the default partition)
    started = datetime.now(UTC)
    check = ensure_partitions(months_ahead=0, today=JAN.replace(month=3).date(), interval="month")
    march = partition_name(JAN.replace(month=3).date())
    assert check.created == [march], check
    assert check.blocked == []
    assert (datetime.now(UTC) - started).total_seconds() < 2
    assert (march, "2043-03-01", "2043-04-01") in spans()
    # Made like the log: a row routed there takes the log's identity and defaults, and is read through it.
    audit_rows_at([JAN.replace(month=3, day=9)])
    assert rows_in(march) == 1
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id IS NOT NULL FROM {TABLE} WHERE event_time = %s", [JAN.replace(month=3, day=9)])  # noqa: S608
        assert cursor.fetchone() == (True,)


def test_a_partition_whose_attach_cannot_lock_the_default_partition_leaves_no_table_behind(open_insert):
    open_insert(datetime(2050, 1, 1, tzinfo=UTC))  # an open insert routed to the default partition
    check = ensure_partitions(months_ahead=0, today=JAN.replace(month=5).date(), interval="month")
    may = partition_name(JAN.replace(month=5).date())
    assert check.blocked == [may]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname = %s", [may])
        assert cursor.fetchone() == (0,), "the standalone table went with the refused ATTACH"
    assert pending_tables() == []


def test_rows_arriving_while_a_range_drains_are_moved_unlocked_not_under_the_attach_lock():
    name = partition_name(JAN.date())
    ids = audit_rows_at([JAN + timedelta(hours=n) for n in range(10)])
    batches: list[int] = []

    def arrive(table: str, rows: int) -> None:  # the alerter audits 4 more rows of the range after each of 4 batches
        batches.append(rows)
        if len(batches) <= 4:
            ids.extend(audit_rows_at([JAN + timedelta(days=2, minutes=len(batches) * 10 + n) for n in range(4)]))

    report = move_default_rows(batch_size=5, interval="month", after_batch=arrive, pause_ratio=0)
    assert report.attached == [name]
    assert report.moved == {name: 26}
    assert report.moved_locked == 0, "every row that arrived was moved by an unlocked batch"
    assert batches[-1] < 5, "drained until a batch came back short"
    assert sorted(all_event_ids()) == sorted(ids)
    assert rows_in(DEFAULT) == 0


def test_an_attach_cut_off_by_its_statement_timeout_leaves_the_table_pending_and_is_retried():
    name = partition_name(JAN.date())
    audit_rows_at([JAN + timedelta(days=1)])
    with connection.cursor() as cursor:  # a default partition large enough for ATTACH's scan of it to take time
        cursor.execute(
            f"INSERT INTO {TABLE} (event_id, event_time, received_at, hostname, environment, handling, raw) "  # noqa: S608
            "SELECT gen_random_uuid(), t, t, 'bulk', 'prod', 'no_match', '{}' FROM generate_series("
            "'2051-01-01Z'::timestamptz, '2051-01-01Z'::timestamptz + interval '99999 seconds', interval '1 second') t"
        )
    report = move_default_rows(
        interval="month", attach_attempts=2, attach_statement_timeout_ms=1, after_batch=None, batch_size=300_000
    )
    assert name in report.pending, report
    assert name not in report.attached
    assert rows_in(name) == 1, "the moved row stays moved"
    done = move_default_rows(interval="month", batch_size=300_000)
    assert name in done.attached
    assert rows_in(DEFAULT) == 0


def test_rows_of_a_range_past_the_retention_horizon_stay_in_the_default_partition_counted_and_logged(caplog):
    # A dead letter replayed long after: its event time is in a month retention already archived.
    now = datetime(2044, 6, 15, tzinfo=UTC)  # event_retention_days (90 by default) ago is mid-March
    audit_rows_at([datetime(2044, 2, 10, tzinfo=UTC), datetime(2044, 2, 11, tzinfo=UTC)])
    recent = audit_rows_at([datetime(2044, 4, 2, tzinfo=UTC)])
    with caplog.at_level("WARNING", logger="mutt.partitions"):
        report = move_default_rows(interval="month", now=now)
    assert report.expired == {"2044-02-01..2044-03-01": 2}
    assert report.attached == [partition_name(datetime(2044, 4, 1).date())], "a range inside retention is made"
    assert not [s for s in spans() if s[1] == "2044-02-01"], "the archived month is not recreated"
    assert rows_in(DEFAULT) == 2
    assert any("2044-02-01..2044-03-01" in r.getMessage() and "retention" in r.getMessage() for r in caplog.records)
    assert set(recent) <= set(all_event_ids())
    assert pending_tables() == []
