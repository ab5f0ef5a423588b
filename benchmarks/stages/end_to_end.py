"""end_to_end: a fixed offered rate through gunicorn → run_alerter → run_forwarder → mock_moog.

All four run as their own processes, as ``mutt up`` runs them, with the 1,000-rule corpus. A paced
load generator sends 50-event batches on a fixed schedule (every 10 ms at 5,000 events/s) whatever
the answers, and records when each 202 arrived and the event ids it carried. After the load, the
pipeline drains; then every accepted event must have its audit row and every event the alerter marked
for forwarding must be in mock_moog exactly once: anything else is counted as lost (or duplicated).
Latency is mock_moog's ``received_at`` minus the 202's arrival at the generator (one machine clock).
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

from benchmarks import corpus, feed, servers
from benchmarks.env import BenchEnv
from benchmarks.plan import Plan
from benchmarks.stages.ingest import OPEN_LIMITS, create_ingest_key
from benchmarks.stats import percentile

DRAIN_TIMEOUT = 120.0


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    feed.install_hosts()
    feed.install_rules(plan.e2e_rules)
    env.reset_pipeline()
    expected = int(plan.e2e_rate * plan.e2e_seconds)
    mock, url = servers.start_mock_moog(env, "mock-moog-e2e", max_events=expected * 2 + 10_000)
    env.set_settings(
        {
            **OPEN_LIMITS,
            "moog_url": f"{url}/events",
            "moog_rate_limit": 100_000,
            "moog_rate_period": 1.0,
            "moog_batch_size": 50,
        },
    )
    api_key = create_ingest_key()
    workers = servers.web_workers(plan.web_workers)
    web, port = servers.start_gunicorn(env, "gunicorn-e2e", workers=workers)
    alerter = servers.start_worker(env, "e2e-alerter", "run_alerter", until_idle=False)
    forwarder = servers.start_worker(env, "e2e-forwarder", "run_forwarder", until_idle=False)
    feed.wait_started(alerter, "alerter")
    feed.wait_started(forwarder, "forwarder")
    items = [corpus.event_item(sample) for sample in corpus.samples(20_000, seed=13)]
    bodies = [items[i : i + plan.e2e_batch] for i in range(0, len(items), plan.e2e_batch)]
    results = []
    try:
        for n in range(1, plan.runs + 1):
            results.append(one_run(env, plan, url=url, port=port, api_key=api_key, bodies=bodies, name=f"e2e-{n}"))
            for child in (web, alerter, forwarder, mock):
                child.check_alive()
    finally:
        env.children.stop_all()
        env.reset_pipeline()
    figures = {
        "offered_per_s": round(statistics.median(r["offered_per_s"] for r in results)),
        "delivered": round(statistics.median(r["delivered"] for r in results)),
        "lost": sum(r["lost"] for r in results),  # every run's losses: one lost event anywhere shows
        **{name: round(statistics.median(r[name] for r in results), 1) for name in ("p50_ms", "p95_ms", "p99_ms")},
    }
    return {
        **figures,
        "runs": results,
        "params": {
            "rate": plan.e2e_rate,
            "seconds": plan.e2e_seconds,
            "batch": plan.e2e_batch,
            "rules": plan.e2e_rules,
            "workers": workers,
            "processes": "gunicorn, run_alerter, run_forwarder, mock_moog, 1 load generator",
        },
    }


def one_run(
    env: BenchEnv, plan: Plan, *, url: str, port: int, api_key: str, bodies: list[Any], name: str
) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE rules_eventauditlog")
    servers.http("DELETE", f"{url}/events")
    start_at = time.time() + 1.0
    args = [
        "paced",
        "--port",
        str(port),
        "--threads",
        "8",
        "--start-at",
        f"{start_at:.6f}",
        "--rate",
        str(plan.e2e_rate),
        "--batch",
        str(plan.e2e_batch),
        "--seconds",
        str(plan.e2e_seconds),
    ]
    out = servers.run_loadgen(
        env, name, processes=1, args=args, bodies=bodies, api_key=api_key, timeout=plan.e2e_seconds + 90
    )[0]
    drained_after = wait_pipeline_drained()
    accepted = {event_id: at for at, ids in out["accepted"] for event_id in ids}
    audited, forwarded = _audit_rows()
    delivered, duplicates = _deliveries(url)
    latencies = [(delivered[e] - accepted[e]) * 1000 for e in delivered.keys() & accepted.keys()]
    unaudited = len(accepted.keys() - audited)
    undelivered = len((forwarded & accepted.keys()) - delivered.keys())
    last_answer = max((at for at, _ in out["accepted"]), default=start_at + plan.e2e_seconds)
    return {
        "offered_per_s": round(out["sent_events"] / max(plan.e2e_seconds, last_answer - start_at), 1),
        "accepted": len(accepted),
        "refused_requests": sum(c for status, c in out["statuses"].items() if status != "202"),
        "forwarded": len(forwarded & accepted.keys()),
        "delivered": len(delivered.keys() & accepted.keys()),
        "lost": unaudited + undelivered,
        "lost_unaudited": unaudited,
        "lost_undelivered": undelivered,
        "duplicates": duplicates,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "max_send_lag_s": out["max_send_lag_s"],
        "drained_after_load_s": round(drained_after, 2),
        "generator_errors": out["errors"],
    }


def wait_pipeline_drained() -> float:
    """Seconds until ingest and alert streams are empty with nothing pending or scheduled for retry."""
    from core import contracts, streams
    from core.redis import get_redis
    from delivery.retry import schedule_key

    client = get_redis()
    started = time.monotonic()
    deadline = started + DRAIN_TIMEOUT
    pairs = ((streams.ingest_stream(), contracts.ALERTERS_GROUP), (streams.alerts_stream(), contracts.FORWARDERS_GROUP))
    while time.monotonic() < deadline:
        if all(feed.is_drained(client, s, g) for s, g in pairs) and client.zcard(schedule_key()) == 0:
            return time.monotonic() - started
        time.sleep(0.02)
    raise RuntimeError(f"the pipeline did not drain within {DRAIN_TIMEOUT:.0f}s of the end of the load")


def _audit_rows() -> tuple[set[str], set[str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id::text, forwarded FROM rules_eventauditlog")
        rows = cursor.fetchall()
    return {event_id for event_id, _ in rows}, {event_id for event_id, forwarded in rows if forwarded}


def _deliveries(url: str) -> tuple[dict[str, float], int]:
    """First receipt time per event id at mock_moog, and how many receipts were repeats."""
    status, body = servers.http("GET", f"{url}/events", timeout=120)
    if status != 200 or body["count"] != len(body["events"]):
        raise RuntimeError(f"mock_moog kept {len(body['events'])} of {body['count']} events (raise --max-events)")
    first: dict[str, float] = {}
    repeats = 0
    for record in body["events"]:
        event_id = record["event"].get("custom_info", {}).get("event_id", "")
        received = datetime.fromisoformat(record["received_at"]).timestamp()
        if event_id in first:
            repeats += 1
            first[event_id] = min(first[event_id], received)
        else:
            first[event_id] = received
    return first, repeats
