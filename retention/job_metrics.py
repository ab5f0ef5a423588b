"""The job metrics, kept in Redis and exported by the web tier's ``/metrics``.

Scheduled jobs run in django-q2's worker processes, forked by the cluster and replaced after a timeout
or a crash: a prometheus counter in one of them is scraped by nobody and dies with it. So every run
(scheduled, or an operator's ``run_job``, in whatever process) adds to two Redis hashes, and
:class:`JobsCollector` reads them when Prometheus scrapes (one round trip):

- ``mutt_job_runs_total{job,outcome}``: runs by outcome (done, idle, failed, locked);
- ``mutt_job_last_success_timestamp_seconds{job}``: when each job last ended done or idle (alert when
  it is older than a few intervals).

Only the web tier exports them (``mutt_project.metrics``): one scrape target, so a sum over targets
counts each run once. The counts live as long as Redis keeps them; Redis losing them is a counter reset,
which Prometheus's ``rate`` and ``increase`` handle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.redis import get_redis, key

logger = logging.getLogger("mutt.jobs")

RUNS = "mutt_job_runs"  # exported with prometheus's _total suffix
LAST_SUCCESS = "mutt_job_last_success_timestamp_seconds"
_SUCCESSES = ("done", "idle")


def runs_key() -> str:
    return key("jobs", "metrics", "runs")  # field "<job>|<outcome>": count


def last_success_key() -> str:
    return key("jobs", "metrics", "last_success")  # field "<job>": epoch seconds


def record(client: redis.Redis, job: str, outcome: str, now: float) -> None:
    """Count one run of ``job`` ending with ``outcome`` at ``now`` (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(runs_key(), f"{job}|{outcome}", 1)
    if outcome in _SUCCESSES:
        pipe.hset(last_success_key(), job, repr(now))
    pipe.execute()


def read(client: redis.Redis) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
    """The run counts by (job, outcome) and the last success by job."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(runs_key())
    pipe.hgetall(last_success_key())
    runs, successes = pipe.execute()
    counts = {}
    for field, value in runs.items():
        job, _, outcome = field.decode().rpartition("|")
        counts[(job, outcome)] = int(value)
    return counts, {job.decode(): float(value) for job, value in successes.items()}


class JobsCollector(Collector):
    """Exports :func:`read` at scrape time; nothing (and a log line) when Redis cannot be read."""

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The metric names, without reading Redis (the registry asks when the collector is registered)."""
        yield CounterMetricFamily(RUNS, "", labels=["job", "outcome"])
        yield GaugeMetricFamily(LAST_SUCCESS, "", labels=["job"])

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            counts, successes = read(get_redis())
        except (redis.RedisError, OSError) as exc:
            logger.warning("job metrics not exported: Redis cannot be read (%s)", type(exc).__name__)
            return
        runs = CounterMetricFamily(
            RUNS,
            "Job runs by job and outcome (done, idle, failed, locked), in every process.",
            labels=["job", "outcome"],
        )
        for (job, outcome), count in sorted(counts.items()):
            runs.add_metric([job, outcome], count)
        yield runs
        last = GaugeMetricFamily(
            LAST_SUCCESS, "When each job last ended done or idle (alert when it is older than a few intervals).",
            labels=["job"],
        )  # fmt: skip
        for job, moment in sorted(successes.items()):
            last.add_metric([job], moment)
        yield last


COLLECTOR = JobsCollector()
