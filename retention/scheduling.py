"""django-q2 schedules for the jobs of :mod:`core.jobs`, and the one task every schedule runs (ADR-014).

**Schedules come from code, once.** :func:`sync_schedules` gives each registered job a schedule named
after it (type "minutes", its interval, due at once) when it has none, and deletes the schedules of
jobs no longer declared. A schedule is a job's by the job it runs (its argument), not by its name, so
a renamed one is still that job's; a second schedule of one job is removed. Of a schedule that exists,
only the timeout is rewritten (the job's lock is sized from the code's timeout): what an operator set
in the admin (name, interval, next run, repeats 0 to pause it) stays. It runs after every ``migrate`` (post_migrate,
``retention.apps``), which every deployment and ``mutt up`` run before starting the cluster, and on its
own as ``manage.py sync_schedules``. Concurrent syncs (two machines migrating at once) take turns on
a PostgreSQL advisory lock, so none creates a schedule twice.

**Every schedule runs** :func:`run_scheduled` ``(name)``: the job through :class:`JobRunner` (the
job's Redis lock, a request id, its count in Redis) as ``system:scheduler``. A run that fails, by its
result or by raising, raises :class:`JobFailed`: django-q2 then records a failed task (the admin's
"Failed tasks") and, with ``ack_failures`` off, hands it out again, up to ``max_attempts`` attempts:
``MUTT_SCHEDULER_FAILURE_RETRY_SECONDS`` later (:func:`retry_soon`). A task whose cluster was killed
comes back ``retry`` seconds after it was taken. A run that finds the lock held succeeds without running: the
job is running elsewhere, and a retry would only find it again.
"""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from core.audit import Actor
from core.jobs import Job, JobOutcome, get_job, registry
from retention.runner import JobRunner, lock_seconds

logger = logging.getLogger("mutt.jobs")

ENTRY = "retention.scheduling.run_scheduled"  # the schedules' task function, as django-q2 stores it
ACTOR = Actor.system("scheduler")
MIGRATE = Actor.system("migrate")  # who syncs after every migrate
# Two syncs at once (two machines migrating) take turns on this (pg_advisory_xact_lock's bigint key).
SYNC_LOCK_ID = 0x4D5554545343  # "MUTTSC"


class JobFailed(RuntimeError):
    """A scheduled run ended failed: raised so that django-q2 records the failure and retries the task."""


# The broker id (django_q_ormq row) of the task this worker process has in hand: a worker runs one
# task at a time, and django-q2 tells its pre_execute receivers which one (see remember_task).
_in_hand: dict[str, Any] = {}


def remember_task(sender: object, func: object, task: dict[str, Any], **kwargs: Any) -> None:
    """django-q2's pre_execute, in the worker about to run ``task``: keep its broker id for a failure."""
    _in_hand["ack_id"] = task.get("ack_id")  # None for a task run synchronously (no broker row)


def run_scheduled(name: str) -> str:
    """The task of every job's schedule: run job ``name`` once under its lock; its summary on success."""
    ack_id = _in_hand.pop("ack_id", None)
    job = get_job(name)  # an unknown name raises UnknownJob: a failed task naming it
    try:
        result = JobRunner(actor=ACTOR).run_now(job)
    except Exception:
        # The lock could not be taken or given back (Redis unreachable): the job did not run, or its run
        # ended; either way no run of this task goes on, so it may be retried as soon as a failed one.
        retry_soon(ack_id)
        raise
    if result.outcome is JobOutcome.FAILED:
        retry_soon(ack_id)
        raise JobFailed(f"{name}: {result.summary}")
    return f"{result.outcome}: {result.summary}"


def retry_soon(ack_id: int | None) -> None:
    """Hand a failed task out again after MUTT_SCHEDULER_FAILURE_RETRY_SECONDS rather than `retry`.

    The ORM broker hands a task out again once its row's ``lock`` time has passed; the cluster set it
    to `retry` seconds after taking it, a bound that must outlast the longest job (a killed cluster's
    task waits for it). A run that ended failed has released its job's lock: nothing stops an earlier
    retry, so its row is made due sooner. django-q2 still counts the attempt and drops the row after
    `max_attempts`.
    """
    if ack_id is None:
        return
    delay = min(settings.MUTT_SCHEDULER_FAILURE_RETRY_SECONDS, settings.MUTT_SCHEDULER_RETRY_SECONDS)
    try:
        OrmQ.objects.filter(pk=ack_id).update(lock=timezone.now() + timedelta(seconds=delay))
    except DatabaseError as exc:  # the failure itself is still raised and recorded; only the delay is lost
        logger.warning("failed task %s: retried after `retry`, not sooner (PostgreSQL: %s)", ack_id, exc)


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # they exist; as edited, if they were
    differs: list[str] = field(default_factory=list)  # kept with an interval other than the code's
    retimed: list[str] = field(default_factory=list)  # their cluster timeout rewritten to the job's
    duplicates: list[str] = field(default_factory=list)  # a second schedule of one job, removed


def minutes(job: Job) -> int:
    """The job's interval in whole minutes (django-q2's finest interval), at least one."""
    return max(1, round(job.interval / 60))


def cluster_timeout(job: Job) -> int:
    """The seconds after which the cluster kills a run of ``job`` (whole seconds, at least one)."""
    return max(1, math.ceil(job.timeout))


def q_options_kwargs(job: Job) -> str:
    return repr({"q_options": {"timeout": cluster_timeout(job)}})


def check_timeouts(jobs: Iterable[Job], retry: float | None = None) -> None:
    """Refuse a job whose run could outlast ``retry``: django-q2 would hand its task out again while it
    runs; the second run would find the lock held and succeed, and the first's result would be lost."""
    limit = float(settings.MUTT_SCHEDULER_RETRY_SECONDS if retry is None else retry)  # Q_CLUSTER's retry
    too_long = [f"{job.name} ({job.timeout:g}s)" for job in jobs if lock_seconds(job) >= limit]
    if too_long:
        raise ImproperlyConfigured(
            f"MUTT_SCHEDULER_RETRY_SECONDS ({limit:g}s) must exceed every job's timeout plus a margin; "
            f"raise it or shorten: {', '.join(too_long)}"
        )


def sync_schedules(jobs: Iterable[Job] | None = None, *, actor: Actor = MIGRATE) -> SyncReport:
    """Create the missing schedules of ``jobs`` (default: every registered job), remove those of jobs
    that are gone, keep one schedule per job, and give each the job's current timeout. Each change is
    logged with ``actor`` (django-q2's tables keep no history of their own).

    A schedule is the job's by the job it runs (its argument), not by its name: an operator may rename it
    in the admin. What the operator owns stays as set (name, interval, next run, repeats 0 to pause it);
    the timeout is the code's, since the job's Redis lock is sized from the code's timeout
    (:func:`~retention.runner.lock_seconds`) and the two must agree."""
    jobs = list(registry().values() if jobs is None else jobs)
    check_timeouts(jobs)
    wanted = {job.name: job for job in jobs}
    report = SyncReport()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYNC_LOCK_ID])
        existing: dict[str, Schedule] = {}
        for schedule in Schedule.objects.filter(func=ENTRY).order_by("id"):
            name = job_named_by(schedule)
            if name is None or name not in wanted:
                schedule.delete()  # it would only fail, every interval, on a job that no longer exists
                report.removed.append(str(schedule.name))
            elif name in existing:
                # Two schedules of one job would run it twice as often (each run under the lock, but
                # still twice a day for a daily job): the oldest, the one an operator has seen, stays.
                report.duplicates.append(f"{schedule.name} (#{schedule.pk})")
                schedule.delete()
            else:
                existing[name] = schedule
        for name, schedule in sorted(existing.items()):
            report.kept.append(name)
            job = wanted[name]
            if schedule.schedule_type != Schedule.MINUTES or schedule.minutes != minutes(job):
                report.differs.append(name)
            if schedule_timeout(schedule) != cluster_timeout(job):
                report.retimed.append(name)
                Schedule.objects.filter(pk=schedule.pk).update(kwargs=retimed_kwargs(schedule, job))
        for name, job in sorted(wanted.items()):
            if name not in existing:
                Schedule.objects.create(**schedule_fields(job))
                report.created.append(name)
    _log_sync(report, wanted, actor)
    return report


def _log_sync(report: SyncReport, wanted: dict[str, Job], actor: Actor) -> None:
    by = {"actor": actor.label}
    for name in report.created:
        every = minutes(wanted[name])
        logger.info("schedule %s created by %s: every %s min, first run now", name, actor, every, extra=by)
    for name in report.removed:
        logger.warning("schedule %s removed by %s: no job of that name is declared any more", name, actor, extra=by)
    for name in report.duplicates:
        logger.warning("schedule %s removed by %s: a second schedule of a job that has one", name, actor, extra=by)
    for name in report.retimed:
        timeout = cluster_timeout(wanted[name])
        logger.info("schedule %s: timeout set to the job's %ss by %s", name, timeout, actor, extra=by)
    for name in report.differs:
        logger.info("schedule %s kept as edited: its interval is not the code's %s min", name, minutes(wanted[name]))


def _kwargs(schedule: Schedule) -> dict[str, Any]:
    try:
        kwargs = ast.literal_eval(schedule.kwargs or "{}")
    except (SyntaxError, ValueError):
        return {}
    return kwargs if isinstance(kwargs, dict) else {}


def schedule_timeout(schedule: Schedule) -> object:
    """The timeout the cluster enforces on a schedule's runs (its q_options), None when it sets none."""
    options = _kwargs(schedule).get("q_options")
    return options.get("timeout") if isinstance(options, dict) else None


def retimed_kwargs(schedule: Schedule, job: Job) -> str:
    """The schedule's kwargs with the job's timeout; any other option an operator added stays."""
    kwargs = _kwargs(schedule)
    options = kwargs.get("q_options")
    kwargs["q_options"] = {**(options if isinstance(options, dict) else {}), "timeout": cluster_timeout(job)}
    return repr(kwargs)


def job_named_by(schedule: Schedule) -> str | None:
    """The job a schedule of ours runs (its one argument), None when its arguments name none."""
    try:
        name = ast.literal_eval(schedule.args or "None")
    except (SyntaxError, ValueError):
        return None
    return name if isinstance(name, str) else None


def schedule_fields(job: Job) -> dict[str, object]:
    return {
        "name": job.name,
        "func": ENTRY,
        "args": repr(job.name),
        # The cluster kills a task running past its job's timeout (then a failure, retried).
        "kwargs": q_options_kwargs(job),
        "schedule_type": Schedule.MINUTES,
        "minutes": minutes(job),
        "repeats": -1,
        # Due now: a new job (or a fresh database) runs at the cluster's next look, not one interval later.
        "next_run": timezone.now() - timedelta(seconds=1),
    }
