"""alerter: one ``run_alerter`` process draining pre-loaded events, audit writes included.

Per rule count (10, 1,000, 10,000) and run: empty the pipeline and the audit log, pre-load the events
into the ingest stream, start ``run_alerter --until-idle``, and time from its first read (the group's
last-delivered id moves) to the drain (stream empty, nothing pending). Rule compilation at start-up is
outside that window. Peak RSS is sampled every 20 ms over the process's whole life. Every event must
have its audit row at the end, or the run fails.

The detail also gives the rate over the first and the last fifth of the events, so a rate that
changes during a drain (it should not: flood detection is one Lua call per batch, whatever the floods)
shows there.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import feed, procs, servers
from benchmarks.env import BenchEnv
from benchmarks.plan import RULE_COUNTS, Plan

# The alert stream is not consumed in this stage; keep the alerter from warning or pausing (it does both
# above these backlogs), so what is measured is matching, auditing and alerting.
QUIET_BACKLOG = {"alerter_queue_shed_threshold": 100_000_000, "alerter_queue_warn_threshold": 50_000_000}


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    env.set_settings(QUIET_BACKLOG)
    feed.install_hosts()
    payloads = feed.event_payloads(plan.alerter_events)
    figures: dict[str, Any] = {}
    runs: dict[str, list[float]] = {}
    detail: dict[str, Any] = {}
    for count in RULE_COUNTS:
        feed.install_rules(count)
        results = [one_run(env, payloads, f"alerter-{count}-{n}") for n in range(1, plan.runs + 1)]
        rates = [r["events_per_s"] for r in results]
        figures[f"events_per_s_{count}_rules"] = round(statistics.median(rates))
        runs[f"events_per_s_{count}_rules"] = [round(rate) for rate in rates]
        peaks = [r["peak_rss_mb"] for r in results]
        runs[f"rss_mb_{count}_rules"] = [round(p, 1) for p in peaks]
        if count == RULE_COUNTS[-1]:
            figures[f"rss_mb_{count}_rules"] = round(statistics.median(peaks), 1)
        detail[f"rules_{count}"] = {
            "seconds": [round(r["seconds"], 2) for r in results],
            "events_per_s_first_fifth": [r["first_fifth"] for r in results],
            "events_per_s_last_fifth": [r["last_fifth"] for r in results],
            "alerts_per_run": results[-1]["alerts"],
            "alerter_cores": [r["cores"]["worker"] for r in results],
            "servers_cores": [r["cores"]["servers"] for r in results],
            "postgres_cores": [r["cores"]["postgres"] for r in results],
            "redis_cores": [r["cores"]["redis"] for r in results],
            "handling_mix": results[-1]["mix"],
        }
    figures["cost_ratio_10000_vs_10_rules"] = round(
        figures["events_per_s_10_rules"] / figures["events_per_s_10000_rules"], 2
    )
    return {**figures, "runs": runs, "detail": detail, "params": {"events": len(payloads), "processes": 1}}


def one_run(env: BenchEnv, payloads: list[bytes], name: str) -> dict[str, Any]:
    from core import contracts, streams
    from core.redis import get_redis

    client = get_redis()
    stream, group = streams.ingest_stream(), contracts.ALERTERS_GROUP
    env.reset_pipeline()
    feed.push(client, stream, payloads)
    child = servers.start_worker(env, name, "run_alerter")
    sampler = feed.RssSampler(child.pid)
    trace: list[tuple[float, int]] = []
    try:
        first = feed.wait_first_read(client, stream, group, child, timeout=120)
        busy = procs.BusyCores(child.pid)
        # Bounded: a run slower than 500 events/s (plus a minute) is a failure, not a measurement.
        done = feed.wait_drained(client, stream, group, child, timeout=60 + len(payloads) / 500, trace=trace)
        cores = busy.cores()
    finally:
        env.children.stop(child)
        peak = sampler.stop()
    audited = feed.audited_count()
    if audited != len(payloads):
        raise RuntimeError(f"{name}: {audited} audit rows for {len(payloads)} events")
    seconds = done - first
    first_fifth, last_fifth = _fifths(trace, len(payloads), first, done)
    return {
        "events_per_s": len(payloads) / seconds,
        "first_fifth": first_fifth,
        "last_fifth": last_fifth,
        "seconds": seconds,
        "peak_rss_mb": peak,
        "cores": cores,
        "alerts": client.xlen(streams.alerts_stream()),
        "mix": feed.audit_mix(),
    }


def _fifths(trace: list[tuple[float, int]], total: int, first: float, done: float) -> tuple[int | None, int | None]:
    """Events/s over roughly the first and the last fifth of the events, from the drain's progress samples."""
    early = next(((t, left) for t, left in trace if left <= total * 0.8 and t > first), None)
    late = next(((t, left) for t, left in reversed(trace) if left >= total * 0.2 and t < done), None)
    first_rate = round((total - early[1]) / (early[0] - first)) if early else None
    last_rate = round(late[1] / (done - late[0])) if late else None
    return first_rate, last_rate
