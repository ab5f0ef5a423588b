"""Devices with wrong clocks, end to end (ingest view -> alerter -> audit log -> partition job): their
rows land in the partition of when MUTT received them, are kept as long as any other, and leave partition
management unblocked (ADR-015)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.audit import Actor
from core.jobs import JobOutcome, get_job
from retention.partitions import DEFAULT, list_partitions, month_start, partition_name
from retention.runner import JobRunner
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.ingest.helpers import post
from tests.retention.partition_helpers import change_settings, clean_partitions, rows_in

__all__ = ["change_settings", "clean_partitions"]  # fixtures

pytestmark = pytest.mark.usefixtures("clean_pipeline", "clean_partitions")


def run_alerter() -> None:
    alerter = Alerter("wrong-clocks")
    while alerter.step(block_ms=10):
        pass


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_clock_five_years_behind_and_one_three_months_ahead_land_where_mutt_received_them(
    client, api_keys, change_settings
):
    change_settings(max_event_age=365 * 86400, max_clock_skew=7 * 86400, event_retention_days=90)
    now = datetime.now(UTC)
    sent = {
        "behind-5y": now - timedelta(days=5 * 365),
        "ahead-3m": now + timedelta(days=92),
        "behind-120d": now - timedelta(days=120),  # within max_event_age, past the 90-day retention horizon
        "behind-10d": now - timedelta(days=10),  # a little late: kept as sent
    }
    items = [{"hostname": host, "message": "clock test", "timestamp": iso(when)} for host, when in sent.items()]
    response = post(client, items, key=api_keys["ingest"])
    assert response.status_code == 202, response.content
    received = datetime.now(UTC)
    run_alerter()

    rows = {row.hostname: row for row in EventAuditLog.objects.all()}
    assert set(rows) == set(sent)
    for host in ("behind-5y", "ahead-3m", "behind-120d"):
        row = rows[host]
        assert now - timedelta(seconds=5) <= row.event_time <= received, host  # the receive time
        assert row.raw["timestamp_corrected"] is True, host
        assert row.raw["original_timestamp"].startswith(iso(sent[host])[:19]), host
    assert rows["behind-10d"].event_time == sent["behind-10d"].replace(microsecond=0)
    assert rows["behind-10d"].raw["timestamp_corrected"] is False

    # The corrected rows are in this month's partition, archived and dropped with it like any other row
    # of the month. Only the late event kept as sent can be in the default partition: when its month has
    # no partition (a database younger than max_event_age), and the job then moves it out.
    this_month = partition_name(month_start(now.date()))
    assert rows_in(this_month) >= 3
    late_month = partition_name(month_start(sent["behind-10d"].date()))
    late_has_partition = late_month in {p.name for p in list_partitions()}
    assert rows_in(DEFAULT) == (0 if late_has_partition else 1)

    job = get_job("audit_partitions")
    result = JobRunner([job], actor=Actor.cli("clock-tests")).run_now(job)
    assert result.outcome in (JobOutcome.DONE, JobOutcome.IDLE), result
    assert (result.details["blocked"], result.details["pending"]) == ([], [])
    assert result.details["moved"] == ({} if late_has_partition else {late_month: 1})
    assert rows_in(DEFAULT) == 0
    assert EventAuditLog.objects.count() == 4


def test_without_the_clamp_a_future_month_in_the_default_partition_is_moved_out_by_the_job(client, api_keys):
    """The job's guarantee does not rest on ingest alone: a row written straight to the log for a month
    with no partition (an older MUTT, a restore) is moved to a partition of its own at the next run."""
    from tests.retention.partition_helpers import audit_rows_at

    far = datetime(2044, 9, 9, tzinfo=UTC)
    audit_rows_at([far, far + timedelta(days=1)])
    job = get_job("audit_partitions")
    result = JobRunner([job], actor=Actor.cli("clock-tests")).run_now(job)
    assert result.outcome is JobOutcome.DONE, result
    assert result.details["moved"] == {partition_name(month_start(far.date())): 2}
    assert rows_in(DEFAULT) == 0
