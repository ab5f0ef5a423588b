"""ingest: gunicorn (one worker per core, loopback) under separate load-generator processes.

Three closed-loop modes, each for ``--seconds`` per run after a warm-up second:

- ``batch``: arrays of 500 events to ``POST /api/v2/ingest`` (events accepted per second);
- ``single``: one event per request (requests per second, latency percentiles of the 202s);
- ``ceiling``: the same single-event requests to ``/bench/bare/ingest``, a view that only reads the body, in
  the same gunicorn and middleware: what the framework and this generator allow at most.

Rate limits and the queue depth are raised for the run (through the audited settings service), and a
background thread trims the ingest stream, which no alerter consumes here, to keep Redis small.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from benchmarks import corpus, servers
from benchmarks.env import BenchEnv
from benchmarks.plan import Plan
from benchmarks.stats import percentile
from benchmarks.urls import BARE_PATH

INGEST_PATH = "/api/v2/ingest"
WARM_UP_SECONDS = 1.0
# The benchmark must measure ingest, not the admission limits; set in this order (relations hold).
OPEN_LIMITS = {
    "ingest_max_queue_depth": 100_000_000,
    "ingest_max_rate": 10_000_000,
    "ingest_key_max_rate": 10_000_000,
}


def create_ingest_key() -> str:
    from configcenter.services import create_api_key
    from core.audit import Actor

    _, raw = create_api_key(
        actor=Actor.system("bench"),
        name=f"bench-ingest-{uuid.uuid4().hex[:8]}",
        scopes=["ingest"],
        reason="benchmark load generator",
    )
    return raw


class StreamTrimmer:
    """Keeps the unconsumed ingest stream near 1,000 entries (approximate XTRIM every 250 ms)."""

    def __init__(self, client: Any, stream: str) -> None:
        self.client, self.stream = client, stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-trimmer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.client.xtrim(self.stream, maxlen=1000, approximate=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    from core import streams
    from core.redis import get_redis

    env.reset_pipeline()
    env.set_settings(OPEN_LIMITS)
    api_key = create_ingest_key()
    items = [corpus.event_item(sample) for sample in corpus.samples(4000, seed=11)]
    bodies: dict[str, list[Any]] = {
        "batch": [items[i : i + plan.ingest_batch] for i in range(0, len(items), plan.ingest_batch)],
        "single": items[:256],
    }
    workers = servers.web_workers(plan.web_workers)
    child, port = servers.start_gunicorn(env, "gunicorn-ingest", workers=workers, settings_module="benchmarks.settings")
    trimmer = StreamTrimmer(get_redis(), streams.ingest_stream())
    per_mode: dict[str, list[dict[str, Any]]] = {}
    try:
        for mode, path, body_kind in (("batch", INGEST_PATH, "batch"), ("single", INGEST_PATH, "single"),
                                      ("ceiling", BARE_PATH, "single")):  # fmt: skip
            per_mode[mode] = [
                closed_run(
                    env,
                    plan,
                    port=port,
                    api_key=api_key,
                    name=f"ingest-{mode}-{n}",
                    path=path,
                    bodies=bodies[body_kind],
                    batch=mode == "batch",
                )
                for n in range(1, plan.runs + 1)
            ]
            child.check_alive()
    finally:
        trimmer.stop()
        env.children.stop(child)
        env.reset_pipeline()
    batch, single, ceiling = per_mode["batch"], per_mode["single"], per_mode["ceiling"]
    figures = {
        "batch_events_per_s": round(statistics.median(r["events_per_s"] for r in batch)),
        "single_requests_per_s": round(statistics.median(r["requests_per_s"] for r in single)),
        "single_p50_ms": round(statistics.median(r["p50_ms"] for r in single), 2),
        "single_p99_ms": round(statistics.median(r["p99_ms"] for r in single), 2),
        "ceiling_requests_per_s": round(statistics.median(r["requests_per_s"] for r in ceiling)),
    }
    figures["single_vs_ceiling"] = round(figures["single_requests_per_s"] / figures["ceiling_requests_per_s"], 3)
    return {
        **figures,
        "runs": {
            mode: [{k: v for k, v in r.items() if k != "errors"} for r in results] for mode, results in per_mode.items()
        },
        "detail": {
            "errors": [e for results in per_mode.values() for r in results for e in r["errors"]][:10],
            # gunicorn.conf.py recycles a worker after ~20,000 requests; each recycle boots Django again.
            "worker_recycles": child.count_in_log("Autorestarting worker"),
        },
        "params": {
            "seconds": plan.ingest_seconds,
            "batch": plan.ingest_batch,
            "workers": workers,
            "generator_processes": plan.ingest_processes,
            "threads_per_process": plan.ingest_threads,
            "worker_class": "mutt_project.gunicorn_worker.ThreadWorker (gthread, keep-alive; ADR-004)",
        },
    }


def closed_run(
    env: BenchEnv, plan: Plan, *, port: int, api_key: str, name: str, path: str, bodies: list[Any], batch: bool
) -> dict[str, Any]:
    start_at = time.time() + WARM_UP_SECONDS + 0.5  # the generators' own start-up, then a warm-up second
    end_at = start_at + plan.ingest_seconds
    args = [
        "closed",
        "--port",
        str(port),
        "--path",
        path,
        "--threads",
        str(plan.ingest_threads),
        "--start-at",
        f"{start_at:.6f}",
        "--end-at",
        f"{end_at:.6f}",
        *(["--count-accepted"] if batch else []),
    ]
    outputs = servers.run_loadgen(
        env,
        name,
        processes=plan.ingest_processes,
        args=args,
        bodies=bodies,
        api_key=api_key,
        timeout=end_at - time.time() + 60,
    )
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    for output in outputs:
        for status, count in output["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
        latencies.extend(output["latencies_ms"])
    if not latencies:
        raise RuntimeError(f"{name}: no successful request ({statuses}; {outputs[0]['errors']})")
    seconds = end_at - start_at
    return {
        "requests_per_s": round(len(latencies) / seconds, 1),
        "events_per_s": round(sum(o["accepted_events"] for o in outputs) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "statuses": statuses,
        # Cores the generators kept busy (start-up and warm-up included, so an upper bound).
        "generator_cores": round(sum(o["cpu_seconds"] for o in outputs) / (time.time() - start_at + 1.5), 2),
        "errors": [e for o in outputs for e in o["errors"]],
    }
