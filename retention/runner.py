"""Runs due jobs (:mod:`core.jobs`), one at a time per job across every runner.

Two things live in Redis, so any number of runners (``run_jobs`` processes, an operator's ``run_job``)
agree without talking to each other:

- a lock per job (redis-py's token lock, expiring after the job's ``timeout``): a job never runs twice
  at once; a runner that finds it held counts the job ``locked`` and looks again a little later;
- when the job is next due (epoch seconds), written after each run: a runner that took the lock
  after another one's run sees the job is not due and leaves it, so a job runs once per interval
  however many runners there are.

A job that raises is logged (a traceback, or one outage line for a Redis or PostgreSQL outage),
counted ``failed``, and due again one interval later, like any other run: the loop goes on. Redis
itself failing raises out of :meth:`JobRunner.step`, for the worker loop to report and retry.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from prometheus_client import Counter, Gauge

from core import outage
from core.audit import Actor
from core.context import request_id_scope
from core.jobs import Job, JobOutcome, JobResult
from core.redis import get_redis, key

logger = logging.getLogger("mutt.jobs")

RUNS = Counter("mutt_job_runs_total", "Job runs by job and outcome (done, idle, failed, locked).", ["job", "outcome"])
LAST_SUCCESS = Gauge(
    "mutt_job_last_success_timestamp_seconds",
    "When each job last ended done or idle (alert when it is older than a few intervals).",
    ["job"],
)
# How soon a runner that found a job locked looks at it again.
LOCKED_RETRY_SECONDS = 60.0


def lock_key(job: Job) -> str:
    return key("jobs", job.name, "lock")


def due_key(job: Job) -> str:
    return key("jobs", job.name, "due")


class JobRunner:
    def __init__(
        self,
        jobs: Iterable[Job],
        *,
        actor: Actor,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jobs = list(jobs)
        self.actor = actor
        self.client = client or get_redis()
        self.clock = clock
        # When this runner looks at each job next; every job is looked at on the first step.
        self.next_look: dict[str, float] = {job.name: 0.0 for job in self.jobs}

    def step(self) -> list[tuple[Job, JobResult]]:
        """Run each job this runner should look at and finds due; returns what ran (or was locked)."""
        ran = []
        for job in self.jobs:
            if self.next_look[job.name] <= self.clock():
                result = self.run_due(job)
                if result is not None:
                    ran.append((job, result))
        return ran

    def seconds_until_next(self) -> float:
        return max(0.0, min(self.next_look.values(), default=LOCKED_RETRY_SECONDS) - self.clock())

    def run_due(self, job: Job) -> JobResult | None:
        """Run ``job`` under its lock if it is due; None when another runner's run made it not due."""
        with self._holding(job) as held:
            if not held:
                return self._locked(job)
            due = self.client.get(due_key(job))
            if due is not None and float(due) > self.clock():
                self.next_look[job.name] = float(due)
                return None
            return self._execute(job)

    def run_now(self, job: Job) -> JobResult:
        """Run ``job`` under its lock whether it is due or not (an operator's ``run_job``)."""
        with self._holding(job) as held:
            return self._execute(job) if held else self._locked(job)

    @contextlib.contextmanager
    def _holding(self, job: Job) -> Iterator[bool]:
        """The job's lock for the block; False when another runner holds it."""
        lock = self.client.lock(lock_key(job), timeout=job.timeout, blocking=False)
        if not lock.acquire():
            yield False
            return
        try:
            yield True
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                logger.warning("job %s ran past its timeout (%ss): its lock had expired", job.name, job.timeout)

    def _locked(self, job: Job) -> JobResult:
        self.next_look[job.name] = self.clock() + min(job.interval, LOCKED_RETRY_SECONDS)
        result = JobResult(JobOutcome.LOCKED, "another runner is running it")
        self._record(job, result, 0.0)
        return result

    def _execute(self, job: Job) -> JobResult:
        started = self.clock()
        result = self._call(job)
        next_due = started + job.interval
        # Kept a while past its time, so an expired key never makes a job due early.
        self.client.set(due_key(job), repr(next_due), ex=int(2 * job.interval) + 1)
        self.next_look[job.name] = next_due
        self._record(job, result, self.clock() - started)
        return result

    def _call(self, job: Job) -> JobResult:
        try:
            with request_id_scope():  # the log lines and audit rows of one run share a request id
                return job.run(self.actor)
        except Exception as exc:
            reporter = outage.reporter_for(exc)
            if reporter is None:
                logger.exception("job %s raised; it runs again in %ss", job.name, job.interval)
            else:
                reporter.failed(exc, doing=f"job {job.name} runs again in {job.interval}s")
            return JobResult(JobOutcome.FAILED, f"raised {type(exc).__name__}: {exc}")

    def _record(self, job: Job, result: JobResult, seconds: float) -> None:
        RUNS.labels(job.name, result.outcome).inc()
        # The details as one field: a job's names cannot then clash with LogRecord's (created, name…).
        fields: dict[str, Any] = {
            "job": job.name, "outcome": str(result.outcome), "seconds": round(seconds, 3), "details": result.details,
        }  # fmt: skip
        if result.outcome in (JobOutcome.DONE, JobOutcome.IDLE):
            LAST_SUCCESS.labels(job.name).set(self.clock())
            logger.info("job %s %s: %s", job.name, result.outcome, result.summary, extra=fields)
        else:
            logger.warning("job %s %s: %s", job.name, result.outcome, result.summary, extra=fields)
