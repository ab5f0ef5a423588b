"""Runs a job (:mod:`core.jobs`) once, never twice at once across every process that runs jobs.

When a job runs is django-q2's business (its schedules, :mod:`retention.scheduling`); this module is
what every run goes through, scheduled or an operator's ``run_job``:

- a lock per job in Redis (redis-py's token lock): a run that finds it held does not run the job and
  counts it ``locked``. It expires ``LOCK_MARGIN_SECONDS`` after the job's ``timeout``, later than the
  cluster kills a worker that overran it, so a process that died mid-run frees the job without ever
  letting two runs overlap;
- a request id per run, shared by its log lines and audit rows;
- PostgreSQL's statement_timeout at the job's timeout for the run (:func:`statement_timeout`): the
  database stops a statement that a signal or the cluster cannot interrupt;
- one log line per run (``mutt.jobs``) and its count in Redis (:mod:`retention.job_metrics`), so that
  runs in the cluster's forked workers are counted where ``/metrics`` can read them.

A job that raises is logged (a traceback, or one outage line for a Redis or PostgreSQL outage) and
counted ``failed``; the caller decides what a failure means (the scheduled task raises, so that
django-q2 records it and retries it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from django.db import DatabaseError, connection

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
            with statement_timeout(job.timeout):
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


@contextlib.contextmanager
def statement_timeout(seconds: float) -> Iterator[None]:
    """PostgreSQL's statement_timeout at ``seconds`` on this thread's connection for the block.

    Neither run_job's SIGALRM nor the cluster's timeout stops a statement: the signal's handler waits
    for psycopg2's call to return, and a killed worker's backend runs its statement on (holding its
    locks) until it ends. The database itself then cancels a statement running past the job's timeout.
    The bound is per statement: one begun late in a run may go on up to a timeout after it began, past
    the Redis lock; what a run's statements change stays guarded by their own PostgreSQL locks (a
    retention policy's advisory lock, the partition locks), which a second run then waits for or skips. Set on the
    run's first query (a job that never queries never opens a connection for it); the connection's own
    value is back after the run.
    """
    milliseconds = max(1, math.ceil(seconds * 1000))
    state: dict[str, str] = {}  # "previous": the connection's own value, once set for the run

    def set_first(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if "previous" not in state:
            raw = context["cursor"].cursor  # psycopg2's own cursor: not through this wrapper again
            raw.execute("SELECT current_setting('statement_timeout')")
            state["previous"] = raw.fetchone()[0]
            raw.execute("SET statement_timeout = %s", [milliseconds])
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(set_first):
            yield
    finally:
        if "previous" in state and connection.connection is not None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('statement_timeout', %s, false)", [state["previous"]])
            except DatabaseError as exc:  # a broken connection is closed and replaced; a new one has none
                logger.warning("statement_timeout not reset after the run (PostgreSQL: %s)", type(exc).__name__)
