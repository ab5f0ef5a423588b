"""How fast this machine is right now, measured the same way at the start and the end of every run.

On a shared virtual machine the speed of the CPU, of system calls and of the database can change by
tens of percent within an hour, and the pure-Python rule engine does not show all of it: the alerter's
rate moved by a fifth while the rule engine's figure stayed put. So each run records three small
probes, each the median of five tries after a warm-up, and a result is compared with another only alongside them:

- ``python_loop_ms``: a fixed pure-Python loop (interpreter speed);
- ``redis_round_trip_us``: one PING on a kept connection (system calls, loopback, scheduling);
- ``postgres_copy_us_per_row``: COPY of 5,000 audit-shaped rows into a temporary table with the audit
  log's indexes (what the alerter's database side costs per event).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

TRIES = 5
_ROWS = 5_000
_PINGS = 500


def measure() -> dict[str, float]:
    return {
        "python_loop_ms": round(_median(_python_loop) * 1000, 2),
        "redis_round_trip_us": round(_median(_redis_pings) / _PINGS * 1e6, 1),
        "postgres_copy_us_per_row": round(_median(_postgres_copy) / _ROWS * 1e6, 2),
    }


def _median(probe: Callable[[], float]) -> float:
    probe()  # warm-up, not counted: first-use costs (connections, catalog caches) are not the machine's speed
    return statistics.median(probe() for _ in range(TRIES))


def _python_loop() -> float:
    started = time.perf_counter()
    total = 0
    for n in range(300_000):
        total += n % 7
    return time.perf_counter() - started


def _redis_pings() -> float:
    from core.redis import get_redis

    client = get_redis()
    connection = client.connection_pool.get_connection()
    try:
        started = time.perf_counter()
        for _ in range(_PINGS):
            connection.send_command("PING")
            connection.read_response()
        return time.perf_counter() - started
    finally:
        client.connection_pool.release(connection)


def _postgres_copy() -> float:
    from django.db import connection, transaction

    rows = "".join(
        f"{n:08d}-0000-4000-8000-000000000000\t2026-01-01T00:00:00+00:00\tsw-{n % 97:03d}\t{n % 1000}\t"
        f"%LINK-3-UPDOWN: Interface Gi1/0/{n % 48}, changed state to down\t{'c' * 32}\n"
        for n in range(_ROWS)
    ).encode()
    with transaction.atomic(), connection.cursor() as cursor:
        raw: Any = cursor.cursor
        raw.execute(
            "CREATE TEMPORARY TABLE bench_reference (event_id uuid, event_time timestamptz, hostname text, "
            "rule_id bigint, message text, correlation_id text, id bigint GENERATED ALWAYS AS IDENTITY, "
            "PRIMARY KEY (event_time, id), UNIQUE (event_id, event_time)) ON COMMIT DROP"
        )
        raw.execute("CREATE INDEX ON bench_reference (hostname, event_time)")
        raw.execute("CREATE INDEX ON bench_reference (rule_id, event_time)")
        raw.execute("CREATE INDEX ON bench_reference (correlation_id)")
        started = time.perf_counter()
        raw.copy_expert(
            "COPY bench_reference (event_id, event_time, hostname, rule_id, message, correlation_id) FROM STDIN",
            io.BytesIO(rows),
        )
        return time.perf_counter() - started
