"""forwarder: one ``run_forwarder`` process delivering pre-loaded alerts to a mock_moog process.

Per mode and run: empty the pipeline, pre-load the alerts, start ``run_forwarder --until-idle`` and
time from its first read to the drain (stream empty, nothing pending). ``batched`` sends
``moog_batch_size`` = 50 alerts per request (the default), ``single`` one per request. The shared
Moogsoft rate limit is raised for the run, since a benchmark measures the forwarder, not a quota.
mock_moog must have recorded every alert, or the run fails.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import feed, servers
from benchmarks.env import BenchEnv
from benchmarks.plan import Plan

MODES = {"batched": 50, "single": 1}


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    payloads = feed.alert_payloads(plan.forwarder_alerts)
    mock, url = servers.start_mock_moog(env, "mock-moog-forwarder", max_events=1000)
    env.set_settings({"moog_url": f"{url}/events", "moog_rate_limit": 100_000, "moog_rate_period": 1.0})
    figures: dict[str, Any] = {}
    runs: dict[str, list[float]] = {}
    try:
        for mode, batch_size in MODES.items():
            env.set_settings({"moog_batch_size": batch_size})
            rates = [one_run(env, url, payloads, f"forwarder-{mode}-{n}") for n in range(1, plan.runs + 1)]
            figures[f"alerts_per_s_{mode}"] = round(statistics.median(rates))
            runs[f"alerts_per_s_{mode}"] = [round(rate) for rate in rates]
            mock.check_alive()
    finally:
        env.children.stop(mock)
        env.reset_pipeline()
    return {
        **figures,
        "runs": runs,
        "params": {"alerts": len(payloads), "format": "webhook", "batch_sizes": MODES, "processes": 1},
    }


def one_run(env: BenchEnv, url: str, payloads: list[bytes], name: str) -> float:
    from core import contracts, streams
    from core.redis import get_redis

    client = get_redis()
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    env.reset_pipeline()
    servers.http("DELETE", f"{url}/events")
    feed.push(client, stream, payloads)
    child = servers.start_worker(env, name, "run_forwarder")
    try:
        first = feed.wait_first_read(client, stream, group, child, timeout=120)
        # Bounded: slower than 200 alerts/s (plus a minute) is a failure, not a measurement.
        done = feed.wait_drained(client, stream, group, child, timeout=60 + len(payloads) / 200)
    finally:
        env.children.stop(child)
    received = servers.mock_stats(url)["events"]
    if received != len(payloads):
        raise RuntimeError(f"{name}: mock_moog recorded {received} of {len(payloads)} alerts")
    return len(payloads) / (done - first)
