"""Loading the benchmark database and streams, and watching consumers drain them.

Rules, development hosts and device teams go in through a bulk path that still validates every row
with the model's ``clean()`` and writes a history row per object, stamped like the services stamp
theirs. Events and alerts are the canonical shapes ingest and the alerter produce, pushed with
pipelined XADDs. A consumer's run is timed from its first read (the group's last-delivered id moves)
to the drain (nothing left in the stream, nothing pending), polled every few milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psutil

from benchmarks import corpus
from benchmarks.procs import Child, ChildFailed

ACTOR_LABEL = "system:bench"
PUSH_CHUNK = 5000


# --- the database -------------------------------------------------------------------------------


def install_rules(count: int) -> None:
    """Replace every alert rule with the ``count`` benchmark rules (ids 1..count), with history rows."""
    from django.db import connection
    from simple_history.utils import bulk_create_with_history

    from rules.models import AlertRule

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE rules_alertrule, rules_historicalalertrule RESTART IDENTITY")
    objects = [AlertRule(**fields) for fields in corpus.rules(count)]
    _bulk_with_history(objects, AlertRule, bulk_create_with_history)
    _announce_rules()


def install_hosts() -> None:
    """Development hosts and device teams of the corpus (replacing any there were)."""
    from django.db import connection
    from simple_history.utils import bulk_create_with_history

    from rules.models import DevHost, DeviceTeam

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE rules_devhost, rules_historicaldevhost, rules_deviceteam, rules_historicaldeviceteam "
            "RESTART IDENTITY"
        )
    _bulk_with_history([DevHost(hostname=h) for h in corpus.dev_hosts()], DevHost, bulk_create_with_history)
    teams = [DeviceTeam(hostname=h, team_name=t) for h, t in corpus.device_teams().items()]
    _bulk_with_history(teams, DeviceTeam, bulk_create_with_history)
    _announce_rules()


def _bulk_with_history(objects: list[Any], model: type, bulk_create_with_history: Any) -> None:
    from django.db import transaction

    for obj in objects:
        obj.full_clean()  # the model's single validator: a benchmark rule must be a valid rule
    with transaction.atomic():
        bulk_create_with_history(
            objects, model, batch_size=2000, default_change_reason="benchmark data",
            custom_historical_attrs={"history_actor": ACTOR_LABEL, "history_request_id": ""},
        )  # fmt: skip


def _announce_rules() -> None:
    from core.redis import get_redis
    from rules.services import rules_channel

    get_redis().publish(rules_channel(), "bulk")


def audit_mix() -> dict[str, float]:
    """Share of audited events per handling (what the run's events turned out to be)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT handling, count(*) FROM rules_eventauditlog GROUP BY handling")
        counts = dict(cursor.fetchall())
    total = sum(counts.values()) or 1
    return {name: round(count / total, 3) for name, count in sorted(counts.items())}


def audited_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rules_eventauditlog")
        return int(cursor.fetchone()[0])


# --- payloads ------------------------------------------------------------------------------------


def event_payloads(count: int) -> list[bytes]:
    """``count`` canonical events (as ingest queues them), received now, JSON-encoded.

    Ids are made as ingest makes them: a time-ordered event id, and a time-ordered request id as the
    correlation id. Each event has a request of its own (single-event ingest), the costlier case for the
    audit log's correlation index; a batch request shares one id among its events.
    """
    from core.context import new_request_id
    from core.ids import uuid7

    now = datetime.now(UTC).isoformat(timespec="microseconds")
    payloads = []
    for index, sample in enumerate(corpus.samples(count)):
        payloads.append(
            orjson.dumps(
                {
                    "event_id": uuid7(),
                    "hostname": sample.hostname,
                    "message": sample.message,
                    "timestamp": now,
                    "timestamp_inferred": True,
                    "syslog_severity": sample.severity,
                    "facility": 23 if sample.trap_oid is None else None,
                    "trap_oid": sample.trap_oid,
                    "source_type": sample.source_type,
                    "source_ip": f"10.200.{index % 250}.{index % 199 + 1}",
                    "variables": None,
                    "extra": {},
                    "received_at": now,
                    "correlation_id": new_request_id(),
                    "ingested_by": "bench",
                }
            )
        )
    return payloads


def alert_payloads(count: int) -> list[bytes]:
    """``count`` rule alerts as the alerter queues them for the forwarder, JSON-encoded."""
    from core.context import new_request_id
    from core.ids import uuid7

    now = datetime.now(UTC).isoformat(timespec="microseconds")
    payloads = []
    for index, sample in enumerate(corpus.samples(count)):
        rule_id = index % 1000 + 1
        payloads.append(
            orjson.dumps(
                {
                    "kind": "rule",
                    "event_id": uuid7(),
                    "correlation_id": new_request_id(),
                    "hostname": sample.hostname,
                    "rule_id": rule_id,
                    "team": "network-ops",
                    "severity": ("critical", "major", "minor", "warning")[index % 4],
                    "handling": "page_and_ticket",
                    "environment": "prod",
                    "description": sample.message,
                    "event_time": now,
                    "trap_oid": sample.trap_oid or "",
                    "source_type": sample.source_type,
                    "signature": f"{sample.hostname}:{rule_id}:{sample.trap_oid or ''}",
                }
            )
        )
    return payloads


def push(client: Any, stream: str, payloads: Sequence[bytes]) -> None:
    for start in range(0, len(payloads), PUSH_CHUNK):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start : start + PUSH_CHUNK]:
            pipe.xadd(stream, {b"e": payload})
        pipe.execute()


# --- watching a consumer -------------------------------------------------------------------------


def _group(client: Any, stream: str, group: str) -> dict[str, Any]:
    for info in client.xinfo_groups(stream):
        if info["name"].decode() == group:
            return info
    return {"pending": 0, "last-delivered-id": b"0-0", "consumers": 0}


def wait_first_read(client: Any, stream: str, group: str, child: Child, timeout: float) -> float:
    """perf_counter time at which the group first read from ``stream`` (polled every 2 ms)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if _group(client, stream, group)["last-delivered-id"] not in (b"0-0", "0-0"):
            return time.perf_counter()
        child.check_alive()
        time.sleep(0.002)
    raise ChildFailed(f"{child.name} read nothing within {timeout:.0f}s:\n{child.log_tail()}")


def is_drained(client: Any, stream: str, group: str) -> bool:
    return client.xlen(stream) == 0 and _group(client, stream, group)["pending"] == 0


def wait_drained(
    client: Any,
    stream: str,
    group: str,
    child: Child | None,
    *,
    timeout: float,
    trace: list[tuple[float, int]] | None = None,
) -> float:
    """perf_counter time at which ``stream`` was empty with nothing pending (polled every 5 ms).

    With ``trace``, (time, stream length) is appended about every 250 ms: the drain's progress.
    """
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if is_drained(client, stream, group):
            return time.perf_counter()
        if trace is not None and (not trace or time.perf_counter() - trace[-1][0] >= 0.25):
            trace.append((time.perf_counter(), client.xlen(stream)))
        if child is not None:
            child.check_alive()
        time.sleep(0.005)
    left = client.xlen(stream)
    name = child.name if child is not None else stream
    raise ChildFailed(f"{name}: {left} entries still in {stream} after {timeout:.0f}s")


def wait_started(child: Child, worker: str, timeout: float = 60) -> None:
    """Wait until ``child`` logs "<worker> started" (WorkerCommand does once set up: rules loaded, ...).

    Its log, not the consumer group, says so: Redis 6.2 adds a consumer only once it is handed an entry.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.count_in_log(f"{worker} started"):
            return
        child.check_alive()
        time.sleep(0.05)
    raise ChildFailed(f"{child.name} did not start within {timeout:.0f}s:\n{child.log_tail()}")


class RssSampler:
    """Peak resident memory of one process, sampled every 20 ms in a background thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak / (1 << 20)
