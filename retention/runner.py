"""Runs a job (:mod:`core.jobs`) once, never twice at once across every process that runs jobs.

When a job runs is django-q2's business (its schedules, :mod:`retention.scheduling`); this module is
what every run goes through, scheduled or an operator's ``run_job``:

- a lock per job in Redis (redis-py's token lock): a run that finds it held does not run the job and
  counts it ``locked``. It expires ``LOCK_MARGIN_SECONDS`` after the job's ``timeout``, later than the
  cluster kills a worker that overran it, so a process that died mid-run frees the job without ever
  letting two runs overlap;
- a request id per run, shared by its log lines and audit rows;
- one log line per run (``mutt.jobs``) and its count in Redis (:mod:`retention.job_metrics`), so that
  runs in the cluster's forked workers are counted where ``/metrics`` can read them.

A job that raises is logged (a traceback, or one outage line for a Redis or PostgreSQL outage) and
counted ``failed``; the caller decides what a failure means (the scheduled task raises, so that
django-q2 records it and retries it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from core import outage
from core.audit import Actor
from core.context import request_id_scope
from core.jobs import Job, JobOutcome, JobResult
from core.redis import get_redis, key
from retention import job_metrics

logger = logging.getLogger("mutt.jobs")

# The lock outlives the job's timeout by this much: django-q2's guard kills an overrunning worker about
# 3.5 s after the timeout (its buffer plus one guard cycle), so the lock is never free while a run goes on.
LOCK_MARGIN_SECONDS = 10.0


def lock_key(job: Job) -> str:
    return key("jobs", job.name, "lock")


def lock_seconds(job: Job) -> float:
    return job.timeout + LOCK_MARGIN_SECONDS


class JobRunner:
    def __init__(
        self,
        jobs: Iterable[Job] = (),  # unused: ADR-012's runner took the jobs it looked at; its callers still pass them
        *,
        actor: Actor,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.actor = actor
        self.client = client or get_redis()
        self.clock = clock

    def run_now(self, job: Job) -> JobResult:
        """Run ``job`` once under its lock; LOCKED (and not run) while another run holds it."""
        # The log lines and audit rows of one run share a request id.
        with request_id_scope(), self._holding(job) as held:
            if not held:
                result = JobResult(JobOutcome.LOCKED, "another run holds its lock")
                self._record(job, result, 0.0)
                return result
            started = self.clock()
            try:
                result = self._call(job)
            except BaseException:
                # Not an Exception: the cluster's timeout (a SystemExit raised in the worker) or a signal.
                self._record(job, JobResult(JobOutcome.FAILED, "interrupted"), self.clock() - started)
                raise
            self._record(job, result, self.clock() - started)
            return result

    @contextlib.contextmanager
    def _holding(self, job: Job) -> Iterator[bool]:
        """The job's lock for the block; False when another run holds it."""
        lock = self.client.lock(lock_key(job), timeout=lock_seconds(job), blocking=False)
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

    def _call(self, job: Job) -> JobResult:
        try:
            return job.run(self.actor)
        except Exception as exc:
            reporter = outage.reporter_for(exc)
            if reporter is None:
                logger.exception("job %s raised", job.name)
            else:
                reporter.failed(exc, doing=f"job {job.name}")
            return JobResult(JobOutcome.FAILED, f"raised {type(exc).__name__}: {exc}")

    def _record(self, job: Job, result: JobResult, seconds: float) -> None:
        now = self.clock()
        try:
            job_metrics.record(self.client, job.name, result.outcome, now)
        except redis.RedisError as exc:  # the run happened: its log line below still says so
            logger.warning("job %s: its run was not counted (Redis: %s)", job.name, type(exc).__name__)
        # The details as one field: a job's names cannot then clash with LogRecord's (created, name…).
        fields: dict[str, Any] = {
            "job": job.name, "outcome": str(result.outcome), "seconds": round(seconds, 3), "details": result.details,
            "actor": self.actor.label,
        }  # fmt: skip
        if result.outcome in (JobOutcome.DONE, JobOutcome.IDLE):
            logger.info("job %s %s: %s", job.name, result.outcome, result.summary, extra=fields)
        else:
            logger.warning("job %s %s: %s", job.name, result.outcome, result.summary, extra=fields)
