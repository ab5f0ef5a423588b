"""Results: the machine they were measured on, targets beside figures, the table, and the JSON file."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from benchmarks.env import BASE_DIR, BenchEnv
from benchmarks.plan import REQUIRED, TARGETS

_UNITS = (
    ("us_per_event", "µs/event"),
    ("events_per_s", "events/s"),
    ("requests_per_s", "req/s"),
    ("alerts_per_s", "alerts/s"),
    ("rss_mb", "MB"),
    ("_ms", "ms"),
    ("ratio", "x"),
    ("vs_ceiling", "of ceiling"),
    ("rows_per_s", "rows/s"),
    ("bytes_per_row", "B/row"),
    ("drop_s", "s"),
)
# Figures shown in the table although they are neither required nor checked against a target.
_SHOWN = {"rule_engine": ("ratio_10000_vs_10",)}


def machine(env: BenchEnv) -> dict[str, Any]:
    from django.db import connection

    from core.redis import get_redis

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
        "cpu": platform.processor() or platform.machine(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "postgres": postgres,
        "redis": get_redis().info("server")["redis_version"],
        "services": {
            "postgres": "embedded" if env.embedded_postgres else "DATABASE_URL",
            "redis": "embedded" if env.embedded_redis else "REDIS_URL",
            "durable": env.durable,
            "database": env.database,
        },
        "git_commit": git_commit(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str | None:
    """The checked-out commit (read-only ``git rev-parse``), or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    """Put each stage's target checks in its entry; return the summary."""
    counts = {"passed": 0, "failed": 0, "not_applicable": 0}
    for stage in {t.stage for t in TARGETS}:
        entry = results.get(stage)
        if not isinstance(entry, dict):
            continue
        checks = [target.check(entry) for target in TARGETS if target.stage == stage]
        entry["targets"] = checks
        for check in checks:
            key = {True: "passed", False: "failed", None: "not_applicable"}[check["pass"]]
            counts[key] += 1
    return {**counts, "all_pass": counts["failed"] == 0 and counts["not_applicable"] == 0}


def problems(results: dict[str, Any], stages: list[str]) -> list[str]:
    """What makes a run unusable whatever the speed: errors, missing figures, loss, leftover processes."""
    found = []
    for stage in stages:
        entry = results.get(stage) or {}
        if "error" in entry:
            found.append(f"{stage}: {entry['error']}")
        missing = [name for name in REQUIRED[stage] if entry.get(name) is None]
        if missing:
            found.append(f"{stage}: missing {', '.join(missing)}")
    lost = (results.get("end_to_end") or {}).get("lost")
    if lost:
        found.append(f"end_to_end: {lost} accepted events lost")
    if results.get("leftover_processes"):
        found.append(f"processes left behind: {results['leftover_processes']}")
    return found


def _unit(name: str) -> str:
    return next((unit for part, unit in _UNITS if part in name), "")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def rows(results: dict[str, Any], stages: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(stage, figure, measured with unit, target, verdict) for every figure of every stage."""
    table = []
    for stage in stages:
        entry = results.get(stage) or {}
        checks = {check["figure"]: check for check in entry.get("targets", [])}
        if "error" in entry:
            table.append((stage, "error", entry["error"][:60], "", "FAIL"))
        names = [*REQUIRED[stage], *(n for n in checks if n not in REQUIRED[stage]), *_SHOWN.get(stage, ())]
        for name in names:
            check = checks.get(name)
            verdict, target = "", ""
            if check is not None:
                verdict = {True: "pass", False: "FAIL", None: check.get("note", "n/a")}[check["pass"]]
                target = check["target"]
            table.append((stage, name, f"{_fmt(entry.get(name))} {_unit(name)}".strip(), target, verdict))
    return table


def text_table(results: dict[str, Any], stages: list[str]) -> str:
    header = ("stage", "figure", "measured", "target", "result")
    body = rows(results, stages)
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(5)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in body]
    return "\n".join(out)


def markdown_table(results: dict[str, Any], stages: list[str]) -> str:
    out = ["| stage | figure | measured | target | result |", "| --- | --- | --- | --- | --- |"]
    out += ["| " + " | ".join(row) + " |" for row in rows(results, stages)]
    return "\n".join(out)


def write(path: Path, results: dict[str, Any]) -> None:
    results["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def interference(results: dict[str, Any], stages: list[str], threshold: float = 0.1) -> str:
    """A warning naming the stages during which other processes kept the machine noticeably busy."""
    busy = {s: (results.get(s) or {}).get("other_processes_cores", 0.0) for s in stages}
    busy = {stage: cores for stage, cores in busy.items() if cores >= threshold}
    if not busy:
        return ""
    listed = ", ".join(f"{stage} {cores:.2f}" for stage, cores in busy.items())
    return f"note: other processes kept cores busy during these stages (average cores): {listed}"


def speed_reference(results: dict[str, Any]) -> str:
    """The machine's speed probes at the start and the end of the run (see benchmarks/reference.py)."""
    probes = results.get("reference") or {}
    start, end = probes.get("start") or {}, probes.get("end") or {}
    parts = []
    for name, label in (
        ("python_loop_ms", "Python loop ms"),
        ("redis_round_trip_us", "Redis round trip µs"),
        ("postgres_copy_us_per_row", "PostgreSQL COPY µs/row"),
    ):
        if name in start:
            parts.append(f"{label} {start[name]:g}" + (f" → {end[name]:g}" if name in end else ""))
    return "speed reference (start → end): " + ("; ".join(parts) or "not measured")
