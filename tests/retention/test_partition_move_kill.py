"""A move from the default partition killed (SIGKILL) mid-way: no row lost or doubled, and the next run finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.partition_moves import move_default_rows
from retention.partitions import DEFAULT, partition_name, pending_tables
from tests.retention.partition_helpers import all_event_ids, audit_rows_at, clean_partitions, rows_in
from tests.support.waiting import wait_for

__all__ = ["clean_partitions"]  # a fixture

pytestmark = pytest.mark.usefixtures("clean_partitions")

MOVER = textwrap.dedent(
    """
    import sys, time, django
    django.setup()
    from retention.partition_moves import move_default_rows
    stop_after, marker = int(sys.argv[1]), sys.argv[2]
    batches = []

    def after_batch(table, rows):
        batches.append(rows)
        if len(batches) == stop_after:  # committed: say so, and wait for the SIGKILL
            open(marker, "w").write(table)
            time.sleep(60)

    move_default_rows(batch_size=4, interval="month", after_batch=after_batch)
    """
)


@pytest.mark.parametrize(
    ("killed_after", "in_march", "in_june"),
    [
        (1, 4, 0),  # in the middle of March
        (3, 10, 0),  # March all moved, not attached
        (4, 10, 4),  # March attached, June half moved
    ],
)
def test_a_mover_killed_between_batches_loses_and_doubles_nothing_and_the_next_run_finishes(
    child_env, private_tmp: Path, killed_after: int, in_march: int, in_june: int
):
    moments = [datetime(2043, 3, 1, tzinfo=UTC) + timedelta(hours=n) for n in range(10)]
    moments += [datetime(2043, 6, 1, tzinfo=UTC) + timedelta(hours=n) for n in range(5)]
    ids = audit_rows_at(moments)
    marker = private_tmp / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", MOVER, str(killed_after), str(marker)],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert wait_for(marker.exists, timeout=60), process.communicate(timeout=5)[0] if process.poll() else "no batch"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    march, june = partition_name(datetime(2043, 3, 1).date()), partition_name(datetime(2043, 6, 1).date())
    cut_in = june if in_june else march
    assert [name for name, _ in pending_tables()] == [cut_in], "the run was cut short with a table pending"
    assert (rows_in(march), rows_in(june) if in_june else 0) == (in_march, in_june)
    assert in_march + in_june + rows_in(DEFAULT) == 15, "every row in one table or the other"

    report = move_default_rows(interval="month")

    assert report.attached == ([june] if in_june else [march, june])
    assert report.moved == ({june: 5 - in_june} if in_june else {march: 10 - in_march, june: 5})
    assert pending_tables() == []
    assert (rows_in(march), rows_in(june), rows_in(DEFAULT)) == (10, 5, 0)
    assert sorted(all_event_ids()) == sorted(ids), "no row lost, none doubled"
