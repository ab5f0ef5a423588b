"""How fast a writer COPYs into the audit log while the default partition is emptied (``-m slow``).

Measures, does not judge: it prints the writer's rows/s before and during the move and its slowest COPY,
for ADR-015 and the bench. The only assertions are the move's own (every row moved, none lost).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection

from retention.partition_moves import move_default_rows
from retention.partitions import DEFAULT, TABLE, month_start, partition_name
from tests.retention.partition_helpers import clean_partitions, rows_in
from tests.support.waiting import wait_for

__all__ = ["clean_partitions"]  # a fixture

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_partitions")]

ROWS_IN_DEFAULT = int(os.environ.get("MUTT_MOVE_ROWS", "300000"))

WRITER = textwrap.dedent(
    """
    import io, json, sys, time, uuid, django
    from datetime import datetime, UTC
    django.setup()
    from django.db import connection
    out, batch = sys.argv[1], int(sys.argv[2])
    cursor = connection.cursor()
    log = open(out, "w")
    raw = '{"hostname": "edge-001", "message": "' + "x" * 200 + '"}'
    while True:
        now = datetime.now(UTC).isoformat()
        lines = "".join(f"{uuid.uuid4()}\\t{now}\\t{now}\\tedge-001\\tprod\\tno_match\\t{raw}\\n" for _ in range(batch))
        started = time.time()
        cursor.copy_expert(
            "COPY rules_eventauditlog (event_id, event_time, received_at, hostname, environment, handling, raw) "
            "FROM STDIN", io.StringIO(lines))
        log.write(json.dumps([started, time.time() - started, batch]) + "\\n")
        log.flush()
    """
)


def fill_default(rows: int, month: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (event_id, event_time, received_at, hostname, environment, handling, message, raw) "  # noqa: S608
            "SELECT gen_random_uuid(), %s + (n * interval '7 seconds'), now(), 'edge-' || (n %% 500), 'prod', "
            "'no_match', repeat('m', 120), json_build_object('n', n, 'message', repeat('m', 120)) "
            "FROM generate_series(1, %s) AS n",
            [month, rows],
        )


def rate(samples: list[list[float]], start: float, end: float) -> tuple[float, float, int]:
    inside = [s for s in samples if start <= s[0] < end]
    rows = sum(s[2] for s in inside)
    return rows / max(end - start, 1e-9), max((s[1] for s in inside), default=0.0), len(inside)


def test_the_writer_rate_while_the_default_partition_is_emptied(request, child_env, private_tmp: Path):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a measurement of a minute or more: run with -m slow")
    month = datetime(2045, 2, 1, tzinfo=UTC)
    fill_default(ROWS_IN_DEFAULT, month)
    out = private_tmp / "copies.jsonl"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), "500"], env=child_env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=30)
        time.sleep(8)  # the baseline
        moving = time.time()
        report = move_default_rows(interval="month", pause_ratio=float(os.environ.get("MUTT_MOVE_PAUSE", "1.0")))
        moved = time.time()
        time.sleep(3)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    samples = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    before, before_max, _ = rate(samples, moving - 8, moving)
    during, during_max, copies = rate(samples, moving, moved)
    name = partition_name(month_start(month.date()))
    print(
        f"\n{ROWS_IN_DEFAULT} rows moved in {moved - moving:.1f}s ({ROWS_IN_DEFAULT / (moved - moving):,.0f} rows/s); "
        f"writer: {before:,.0f} rows/s before (slowest COPY {before_max * 1000:.0f} ms), "
        f"{during:,.0f} rows/s during ({copies} COPYs, slowest {during_max * 1000:.0f} ms): "
        f"{during / before:.0%} of its rate; the default partition locked {report.lock_held_ms:.0f} ms"
    )
    assert report.moved == {name: ROWS_IN_DEFAULT}
    assert rows_in(name) == ROWS_IN_DEFAULT
    assert rows_in(DEFAULT) == 0
