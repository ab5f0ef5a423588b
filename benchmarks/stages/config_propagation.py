"""config_propagation: milliseconds from ``muttctl config set`` to the new value's use in another process.

A ``muttctl config watch KEY --interval 0.002`` process prints each value it reads with the time it read
it. This process runs ``muttctl config set`` (the command itself, through ``call_command``: the same
validation, audited transaction and publish after commit, without paying Python's start-up per change)
and measures from just before the call to the watcher's first read of the new value. The key is one no
benchmark process reads (``remediation_batch_size``).
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import orjson

from benchmarks.env import BenchEnv
from benchmarks.plan import Plan
from benchmarks.procs import Child, ChildFailed
from benchmarks.stats import percentile

KEY = "remediation_batch_size"
SEEN_TIMEOUT = 5.0


class Watcher:
    """The watcher's JSON lines, read from its log as they arrive."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.offset = 0
        self.seen: list[tuple[Any, float]] = []

    def poll(self) -> None:
        with self.child.log.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            if line.startswith(b"{"):
                entry = orjson.loads(line)
                self.seen.append((entry["value"], entry["observed_at"]))

    def wait_for(self, value: Any, after: float, timeout: float = SEEN_TIMEOUT) -> float:
        """Epoch time at which the watcher first read ``value`` (not before ``after``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for seen, at in self.seen:
                if seen == value and at >= after - 0.001:
                    return at
            if time.monotonic() > deadline:
                raise ChildFailed(f"the watcher did not see {KEY}={value} within {timeout:.0f}s")
            self.child.check_alive()
            time.sleep(0.001)


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    from django.core.management import call_command

    env.set_settings({KEY: 100})
    child = env.children.spawn(
        "muttctl-watch", env.manage_argv("muttctl", "config", "watch", KEY, "--interval", "0.002"), env.child_env()
    )
    watcher = Watcher(child)
    try:
        watcher.wait_for(100, after=0, timeout=60)
        time.sleep(0.5)  # let its settings subscriber connect
        per_run = []
        for n in range(plan.runs):
            latencies = []
            for i in range(plan.config_changes):
                value = 1000 + n * plan.config_changes + i
                started = time.time()
                call_command(
                    "muttctl", "--actor", "bench", "config", "set", KEY, str(value),
                    "--reason", "propagation benchmark", stdout=io.StringIO(),
                )  # fmt: skip
                latencies.append((watcher.wait_for(value, started) - started) * 1000)
            per_run.append({
                "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
                "max_ms": round(max(latencies), 1),
            })  # fmt: skip
    finally:
        env.children.stop(child)
    return {
        "p50_ms": round(statistics.median(r["p50_ms"] for r in per_run), 1),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in per_run), 1),
        "runs": per_run,
        "params": {"changes_per_run": plan.config_changes, "key": KEY, "watch_interval_ms": 2},
    }
