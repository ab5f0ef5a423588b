"""Where the time goes when a throughput target fails: cProfile of the hot path, in this process.

After the stages, each failing throughput target (or every one, with ``--profile``) gets a profile in
its stage's entry of results.json: the hot path driven directly in the harness process against the
same PostgreSQL, Redis and mock_moog (no py-spy here), summarised as shares of CPU time by area, the
top functions, and Redis round trips per item. cProfile slows Python code more than C code, so shares
lean towards Python; they say where to look, not exact costs.
"""

from __future__ import annotations

import cProfile
import io
import logging
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import corpus, feed, servers
from benchmarks.env import BenchEnv
from benchmarks.plan import Plan

logger = logging.getLogger("benchmarks")

# (area, substrings of the file name or function name); the first area that matches wins.
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("rule matching (engine, RE2, Aho-Corasick)", ("rules/engine.py", "rules/regexsets.py", "re2", "ahocorasick")),
    ("audit insert (psycopg2, PostgreSQL)", ("psycopg2", "django/db/")),
    ("Redis (client and round trips)", ("site-packages/redis/", "hiredis", "_socket.socket", "selectors.py")),
    ("flood detection (templating)", ("rules/flood.py", "'re.Pattern'", "/re/")),
    ("JSON (orjson)", ("orjson",)),
    ("HTTP to Moogsoft (urllib3, http.client)", ("urllib3", "http/client.py", "email/", "socket.py")),
    ("payload mapping (delivery/destinations/moogsoft_events.py)", ("moogsoft_events.py", "datetime")),
    ("ingest view, body and schema (ingest/)", ("/ingest/",)),
    ("Django request handling and middleware", ("site-packages/django/",)),
    ("runtime settings (configcenter)", ("configcenter/",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    (
        "worker logic (rules/alerter/, delivery/)",
        ("rules/alerter/", "rules/listener.py", "delivery/", "mutt_project/", "core/"),
    ),
]


# The named steps of each hot path: (label, file, function); their cumulative time as a share of the run.
ALERTER_STEPS = [
    ("take a batch (the read sent ahead: waiting for it, reply parsing)", "rules/alerter/intake.py", "read_new"),
    ("evaluate the batch", "rules/alerter/step.py", "_rows"),
    ("  decode entries", "rules/alerter/evaluate.py", "decode"),
    ("  match and build rows and alerts", "rules/alerter/evaluate.py", "evaluate"),
    ("  flood templates of unmatched events", "rules/flood.py", "template_of"),
    ("  rows in COPY text format", "rules/alerter/copytext.py", "copy_text"),
    ("wait for the audit writer thread (its COPY is not profiled)", "rules/alerter/step.py", "_land"),
    ("send the finishing scripts (publish and ack, flood counts)", "rules/alerter/finish.py", "send_finish"),
    ("read their replies, raise floods", "rules/alerter/finish.py", "collect"),
    ("trim and queue depths", "rules/alerter/finish.py", "_trim"),
    ("load-shedding check", "rules/alerter/step.py", "_shedding"),
]
INGEST_STEPS = [
    ("ingest view, all of it", "ingest/views.py", "ingest_view"),
    ("  authenticate (cached key)", "ingest/auth.py", "authenticate"),
    ("  read body", "ingest/body.py", "read_body"),
    ("  split body", "ingest/body.py", "split_body"),
    ("  normalise event", "ingest/schema.py", "normalise"),
    ("  encode event", "ingest/schema.py", "encode"),
    ("  admission script (Redis round trip)", "ingest/ratelimit.py", "admit"),
    ("  metrics", "prometheus_client/metrics.py", "inc"),
]
FORWARDER_STEPS = [
    ("gate script: record, retries, breaker, read ahead, rate limit (Redis)", "delivery/forwarder.py", "_gate"),
    ("  of which after a delivery (records it, reads the next)", "delivery/forwarder.py", "_mark_delivered"),
    ("blocking read of an empty stream (Redis)", "delivery/forwarder.py", "_read_new"),
    ("build the Moogsoft request", "delivery/destinations/moogsoft_events.py", "build_request"),
    ("HTTP POST to mock_moog", "delivery/transport.py", "post"),
    ("trim acknowledged (Redis)", "delivery/forwarder.py", "_trim"),
]


def summarise(
    profile: cProfile.Profile, items: int, seconds: float, what: str, steps: list[tuple[str, str, str]]
) -> dict[str, Any]:
    stats = pstats.Stats(profile)
    entries = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(tt for _, _, tt, _, _ in entries.values()) or 1.0
    areas: dict[str, float] = {}
    round_trips = 0
    for (filename, _line, name), (_cc, calls, tottime, _ct, _callers) in entries.items():
        label = f"{filename} {name}"
        area = next((area for area, needles in AREAS if any(n in label for n in needles)), "other (builtins)")
        areas[area] = areas.get(area, 0.0) + tottime
        if name == "send_packed_command" and "redis" in filename:
            round_trips += calls
    by_step = {}
    for label, file, function in steps:
        cumulative = max(
            (ct for (f, _l, n), (_cc, _nc, _tt, ct, _c) in entries.items() if n == function and f.endswith(file)),
            default=0.0,
        )
        by_step[label] = round(cumulative / seconds * 100, 1)
    top = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:15]
    return {
        "what": what,
        "items": items,
        "wall_s": round(seconds, 2),
        "items_per_s_profiled": round(items / seconds),
        "redis_round_trips_per_item": round(round_trips / max(items, 1), 3),
        "by_step_pct_of_wall": by_step,
        "by_area_pct": {a: round(t / total * 100, 1) for a, t in sorted(areas.items(), key=lambda x: -x[1])},
        "top_functions": [
            {
                "function": f"{_short(f)}:{line}({name})",
                "calls": calls,
                "tottime_s": round(tt, 3),
                "cumtime_s": round(ct, 3),
            }
            for (f, line, name), (_cc, calls, tt, ct, _callers) in top
        ],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _profiled(call: Callable[[], Any]) -> tuple[cProfile.Profile, float]:
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(call)
    return profile, time.perf_counter() - started


# --- the three hot paths --------------------------------------------------------------------------


def profile_alerter(env: BenchEnv, events: int, rules: int = 1_000) -> dict[str, Any]:
    """The same drain the stage timed (as many events, 1,000 rules), so flood detection reaches its
    steady state (hosts over the threshold) as it did in the measured runs."""
    from benchmarks.stages.alerter import QUIET_BACKLOG
    from core import streams
    from core.redis import get_redis
    from rules.alerter import WRITER_SWITCH_INTERVAL, Alerter

    env.set_settings(QUIET_BACKLOG)
    feed.install_hosts()
    feed.install_rules(rules)
    env.reset_pipeline()
    feed.push(get_redis(), streams.ingest_stream(), feed.event_payloads(events))
    alerter = Alerter("bench-profile", pipelined=True)  # as run_alerter runs it
    alerter.refresh_rules(force=True)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(WRITER_SWITCH_INTERVAL)

    def drain() -> None:
        while alerter.step(block_ms=0):
            pass
        alerter.flush()

    try:
        profile, seconds = _profiled(drain)
        alerter.stop()
    finally:
        sys.setswitchinterval(switch_interval)
    env.reset_pipeline()
    what = f"Alerter.step draining {events:,} events, {rules:,} rules"
    return summarise(profile, events, seconds, what, ALERTER_STEPS)


def profile_ingest(env: BenchEnv, requests: int = 3_000) -> dict[str, Any]:
    """Single-event requests through Django's WSGI handler (gunicorn's call), without the network."""
    import orjson
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    from benchmarks.stages.ingest import OPEN_LIMITS, create_ingest_key
    from benchmarks.urls import BARE_PATH

    env.reset_pipeline()
    env.set_settings(OPEN_LIMITS)
    api_key = create_ingest_key()
    bodies = [orjson.dumps(corpus.event_item(s)) for s in corpus.samples(256, seed=11)]
    with override_settings(ROOT_URLCONF="benchmarks.urls"):
        handler = WSGIHandler()

        def post_all(path: str) -> Callable[[], None]:
            def post() -> None:
                for n in range(requests):
                    _wsgi_post(handler, path, bodies[n % len(bodies)], api_key)

            return post

        post_all("/api/v2/ingest")()  # warm-up: key cache, connections, scripts
        timings = {}
        for name, path in (("ingest", "/api/v2/ingest"), ("bare_view", BARE_PATH)):
            started = time.perf_counter()
            post_all(path)()
            timings[name] = round((time.perf_counter() - started) / requests * 1e6)
        profile, seconds = _profiled(post_all("/api/v2/ingest"))
    env.reset_pipeline()
    what = f"{requests:,} single-event POSTs through Django's WSGI handler"
    summary = summarise(profile, requests, seconds, what, INGEST_STEPS)
    summary["us_per_request_unprofiled"] = timings
    return summary


def _wsgi_post(handler: Any, path: str, body: bytes, api_key: str) -> None:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_API_KEY": api_key,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []
    response = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(response)
    response.close()
    if not statuses[0].startswith("202"):
        raise RuntimeError(f"profiled request to {path} answered {statuses[0]}")


def profile_forwarder(env: BenchEnv, batch_size: int, alerts: int = 5_000) -> dict[str, Any]:
    from core import streams
    from core.redis import get_redis
    from delivery.forwarder import Forwarder

    mock, url = servers.start_mock_moog(env, "mock-moog-profile", max_events=1000)
    try:
        env.set_settings(
            {
                "moog_url": f"{url}/events",
                "moog_rate_limit": 100_000,
                "moog_rate_period": 1.0,
                "moog_batch_size": batch_size,
            },
        )
        env.reset_pipeline()
        feed.push(get_redis(), streams.alerts_stream(), feed.alert_payloads(alerts))
        forwarder = Forwarder("bench-profile")

        def drain() -> None:
            while forwarder.step(block_ms=1):
                pass

        profile, seconds = _profiled(drain)
    finally:
        env.children.stop(mock)
        env.reset_pipeline()
    what = f"Forwarder.step delivering {alerts:,} alerts, {batch_size} per request"
    return summarise(profile, alerts, seconds, what, FORWARDER_STEPS)


# --- which ones ---------------------------------------------------------------------------------


def _failed(entry: dict[str, Any], *figures: str) -> bool:
    return any(c["pass"] is False for c in entry.get("targets", []) if c["figure"] in figures)


def profile_failures(env: BenchEnv, results: dict[str, Any], plan: Plan, *, force: bool = False) -> None:
    """Profile the hot path of every stage whose throughput target failed (all of them with ``force``)."""
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    alerter, ingest, forwarder = (results.get(name) or {} for name in ("alerter", "ingest", "forwarder"))
    if "alerter" in results and (force or _failed(alerter, "events_per_s_1000_rules", "cost_ratio_10000_vs_10_rules")):
        jobs.append(("alerter", lambda: profile_alerter(env, plan.alerter_events)))
    if "ingest" in results and (force or _failed(ingest, "single_requests_per_s", "single_vs_ceiling")):
        jobs.append(("ingest", lambda: profile_ingest(env)))
    if "forwarder" in results and (force or _failed(forwarder, "alerts_per_s_single", "alerts_per_s_batched")):
        batch = 1 if force or _failed(forwarder, "alerts_per_s_single") else 50
        jobs.append(("forwarder", lambda: profile_forwarder(env, batch)))
    for stage, job in jobs:
        logger.info("profiling %s ...", stage)
        try:
            results[stage]["profile"] = job()
        except Exception as exc:
            logger.exception("profiling %s failed", stage)
            results[stage]["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            env.children.stop_all()


def describe(results: dict[str, Any]) -> str:
    """A few lines per profile for the console."""
    lines = []
    for stage in ("alerter", "ingest", "forwarder"):
        profile = (results.get(stage) or {}).get("profile")
        if not profile or "error" in profile:
            continue
        lines.append(f"profile {stage}: {profile['what']} ({profile['items_per_s_profiled']:,}/s under cProfile, "
                     f"{profile['redis_round_trips_per_item']} Redis round trips per item)")  # fmt: skip
        lines += [f"    {share:5.1f}%  {step}" for step, share in profile["by_step_pct_of_wall"].items()]
        if "us_per_request_unprofiled" in profile:
            lines.append(f"    µs per request in process (no network): {profile['us_per_request_unprofiled']}")
    return "\n".join(lines)
