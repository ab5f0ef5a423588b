"""Rows of the default partition moved into partitions of their own, against a real PostgreSQL:
committed transactions, concurrent writers and lock waits as they really happen."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, connections

from core.audit import Actor
from core.jobs import JobOutcome, get_job
from retention.partition_moves import MoveReport, move_default_rows
from retention.partitions import DEFAULT, TABLE, PartitionCheck, ensure_partitions, partition_name, pending_tables
from retention.runner import JobRunner
from tests.retention.partition_helpers import (
    INSERT_ROW,
    all_event_ids,
    audit_rows_at,
    change_settings,
    clean_partitions,
    rows_in,
    spans,
)

__all__ = ["change_settings", "clean_partitions"]  # fixtures

pytestmark = pytest.mark.usefixtures("clean_partitions")

JAN = datetime(2042, 1, 1, tzinfo=UTC)


def spread(start: datetime, count: int, every: timedelta) -> list[datetime]:
    return [start + every * n for n in range(count)]


def test_rows_of_several_months_are_moved_in_batches_into_their_months():
    january = spread(JAN + timedelta(days=3), 7, timedelta(hours=5))
    march = spread(JAN.replace(month=3), 5, timedelta(days=6))
    ids = audit_rows_at(january + march)
    batches: list[tuple[str, int]] = []

    report = move_default_rows(batch_size=3, interval="month", after_batch=lambda t, n: batches.append((t, n)))

    jan, mar = partition_name(JAN.date()), partition_name(JAN.replace(month=3).date())
    assert report.moved == {jan: 7, mar: 5}
    assert report.attached == [jan, mar]
    assert (report.pending, report.duplicates, report.busy) == ([], {}, False)
    assert batches == [(jan, 3), (jan, 3), (jan, 1), (mar, 3), (mar, 2)], "batches of at most 3 rows"
    assert (rows_in(jan), rows_in(mar), rows_in(DEFAULT)) == (7, 5, 0)
    assert sorted(all_event_ids()) == sorted(ids), "every row once"
    assert (jan, "2042-01-01", "2042-02-01") in spans()
    assert pending_tables() == []
    assert move_default_rows(interval="month").moved == {}, "nothing left to do"


def test_by_day_each_day_gets_its_partition_and_an_existing_month_cuts_the_range():
    ensure_partitions(months_ahead=0, today=JAN.date(), interval="month")  # January exists
    audit_rows_at([datetime(2042, 2, 2, 1, tzinfo=UTC), datetime(2042, 2, 2, 23, tzinfo=UTC)])
    audit_rows_at([datetime(2042, 2, 9, tzinfo=UTC)])
    report = move_default_rows(batch_size=2, interval="day")
    assert report.moved == {f"{TABLE}_y2042m02d02": 2, f"{TABLE}_y2042m02d09": 1}
    assert (f"{TABLE}_y2042m02d09", "2042-02-09", "2042-02-10") in spans()


def test_a_month_after_day_partitions_starts_after_the_last_day():
    ensure_partitions(months_ahead=0, today=datetime(2042, 5, 28).date(), interval="day")  # May 28..31
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{TABLE}_y2042m05d31"')  # May 28..30 by day remain
    audit_rows_at([datetime(2042, 5, 2, tzinfo=UTC), datetime(2042, 5, 31, 12, tzinfo=UTC)])
    report = move_default_rows(interval="month")
    assert report.moved == {f"{TABLE}_y2042m05d01": 1, f"{TABLE}_y2042m05d31": 1}
    made = [s for s in spans() if s[1].startswith("2042-05")]
    assert made == [
        (f"{TABLE}_y2042m05d01", "2042-05-01", "2042-05-28"),
        (f"{TABLE}_y2042m05d28", "2042-05-28", "2042-05-29"),
        (f"{TABLE}_y2042m05d29", "2042-05-29", "2042-05-30"),
        (f"{TABLE}_y2042m05d30", "2042-05-30", "2042-05-31"),
        (f"{TABLE}_y2042m05d31", "2042-05-31", "2042-06-01"),
    ]


def test_rows_arriving_while_the_range_is_moved_are_moved_too():
    audit_rows_at(spread(JAN, 50, timedelta(minutes=7)))
    stop = threading.Event()
    written: list[uuid.UUID] = []

    refused: list[str] = []

    def writer() -> None:  # another connection, as the alerter: rows of the month being moved, until told to stop
        try:
            n = 0
            while not stop.is_set() or n < 30:
                moment = JAN + timedelta(days=20, seconds=n)
                try:
                    written.extend(audit_rows_at([moment], host="late-001"))
                except IntegrityError as exc:
                    # An insert routed to the default partition before the attach, that waited for its lock
                    # and is checked after: PostgreSQL refuses it (23514); sent again, it goes to the new
                    # partition. The alerter must take this as transient, not as bad data (see ADR-015).
                    refused.append(str(exc).splitlines()[0])
                    continue
                n += 1
        finally:
            connections.close_all()

    def pace(table: str, rows: int) -> None:
        stop.wait(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = move_default_rows(batch_size=7, interval="month", after_batch=pace)
    finally:
        stop.set()
        thread.join(30)
    late = list(written)
    name = partition_name(JAN.date())
    assert report.attached == [name], report
    # Rows written after the attach went straight to the new partition; none is left behind or doubled.
    assert rows_in(DEFAULT) == 0
    assert rows_in(name) == 50 + len(late)
    assert len(set(all_event_ids())) == 50 + len(late)
    assert report.moved[name] >= 50
    assert set(refused) <= {'new row for relation "rules_eventauditlog_default" violates partition constraint'}


def test_a_redelivered_row_audited_during_the_move_is_dropped_and_counted():
    ids = audit_rows_at(spread(JAN, 4, timedelta(hours=1)))
    first = {"done": False}

    def redeliver(table: str, rows: int) -> None:
        if not first["done"]:  # the first event is now in the pending table: the alerter audits it again
            first["done"] = True
            with connection.cursor() as cursor:
                cursor.execute(INSERT_ROW, [ids[0], JAN, JAN, "edge-001"])

    report = move_default_rows(batch_size=2, interval="month", after_batch=redeliver)
    name = partition_name(JAN.date())
    assert report.duplicates == {name: 1}
    assert report.moved == {name: 4}
    assert sorted(all_event_ids()) == sorted(ids)


def test_an_attach_that_cannot_have_its_locks_waits_only_the_lock_timeout_and_the_next_run_finishes():
    audit_rows_at([JAN + timedelta(days=1)])
    holder = connections.create_connection("default")  # an alerter mid-COPY into the default partition
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute(INSERT_ROW, [uuid.uuid4(), "2050-01-01Z", "2050-01-01Z", "h"])
        started = datetime.now(UTC)
        report = move_default_rows(interval="month", lock_timeout_ms=100, attach_attempts=2)
        took = (datetime.now(UTC) - started).total_seconds()
        name = partition_name(JAN.date())
        assert report.pending == [name]
        assert report.attached == []
        assert took < 5
        assert [n for n, _ in pending_tables()] == [name]
        assert rows_in(name) == 1, "the rows stay moved"

        result = JobRunner([get_job("audit_partitions")], actor=Actor.cli("partition-tests")).run_now(
            get_job("audit_partitions")
        )
        assert result.outcome is JobOutcome.FAILED
        assert result.details["pending"] == [name]
        started = datetime.now(UTC)
        check = ensure_partitions(months_ahead=0, today=datetime(2046, 1, 1).date(), interval="month")
        assert check.blocked == [partition_name(datetime(2046, 1, 1).date())], "made empty, it waits on the lock too"
        assert (datetime.now(UTC) - started).total_seconds() < 5
        assert name in result.summary
    finally:
        holder.rollback()
        holder.close()
    again = move_default_rows(interval="month")
    assert again.attached == [partition_name(JAN.date())]
    assert pending_tables() == []
    assert rows_in(DEFAULT) == 0


def test_a_second_mover_finds_the_first_running_and_does_nothing():
    audit_rows_at([JAN])
    seen: list[MoveReport] = []

    def other_mover(table: str, rows: int) -> None:
        def run() -> None:
            try:
                seen.append(move_default_rows(interval="month"))
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)

    first = move_default_rows(interval="month", after_batch=other_mover)
    assert first.attached == [partition_name(JAN.date())]
    assert [(r.busy, r.moved) for r in seen] == [(True, {})]


def test_partitions_are_not_made_ahead_while_a_move_runs_and_are_at_the_next_run():
    audit_rows_at([JAN])
    checks: list[PartitionCheck] = []

    def ensure_meanwhile(table: str, rows: int) -> None:
        def run() -> None:
            try:
                checks.append(ensure_partitions(months_ahead=1, today=JAN.date(), interval="month"))
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)

    move_default_rows(interval="month", after_batch=ensure_meanwhile)
    assert checks == [PartitionCheck([], [], busy=True)]
    assert ensure_partitions(months_ahead=1, today=JAN.date(), interval="month").created == [
        partition_name(JAN.replace(month=2).date())
    ], "January was made by the move"


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(ValueError, match="batch_size"):
        move_default_rows(batch_size=0)
    with pytest.raises(ValueError, match="attach_attempts"):
        move_default_rows(attach_attempts=0)
