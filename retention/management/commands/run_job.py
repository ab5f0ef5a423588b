"""``python manage.py run_job NAME``: run one job once, now, for an operator (``--list`` names them).

The job's schedules run in django-q2's cluster (``qcluster``, ADR-014); this runs it here, at once, as
``cli:<user>``, through the same runner: under the job's Redis lock, so it never overlaps a scheduled
run (it says ``locked`` instead), counted in the same metrics. Like the cluster, it stops a run at the
job's timeout, before the lock expires: a run here never outlives its lock. It leaves the schedule
alone: the next scheduled run comes at its time. Exits non-zero when the job failed or was locked.
"""

from __future__ import annotations

import math
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_q.models import Schedule

from core.audit import Actor
from core.jobs import JobOutcome, UnknownJob, get_job, registry
from retention.runner import JobRunner
from retention.scheduling import ENTRY, job_named_by


class RunTimedOut(Exception):
    """The run went past its job's timeout (a failure, as in the cluster)."""


def _overran(signum: int, frame: FrameType | None) -> None:
    raise RunTimedOut("it ran past its timeout and was stopped")


class Command(BaseCommand):
    help = "Run one scheduled job once, now, under its lock (--list: the jobs and their schedules)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="The job to run.")
        parser.add_argument("--list", action="store_true", help="List the jobs, their intervals and next runs.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"] or not options["name"]:
            self.list_jobs()
            return
        try:
            job = get_job(options["name"])
        except UnknownJob:
            raise CommandError(f"no job named {options['name']!r}; `run_job --list` names them") from None
        previous = signal.signal(signal.SIGALRM, _overran)
        signal.alarm(max(1, math.ceil(job.timeout)))
        try:
            result = JobRunner(actor=Actor.cli()).run_now(job)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        self.stdout.write(f"{job.name}: {result.outcome}: {result.summary}")
        if result.outcome in (JobOutcome.FAILED, JobOutcome.LOCKED):
            raise CommandError(f"{job.name} {result.outcome}")

    def list_jobs(self) -> None:
        # By the job each runs, not by name: an operator may have renamed a schedule in the admin.
        schedules = {job_named_by(s): s for s in Schedule.objects.filter(func=ENTRY)}
        for job in sorted(registry().values(), key=lambda job: job.name):
            schedule = schedules.get(job.name)
            if schedule is None:
                when = "no schedule (run `manage.py sync_schedules`)"
            elif schedule.repeats == 0:
                when = "schedule paused"
            else:
                when = f"next run {schedule.next_run:%Y-%m-%d %H:%M:%S %Z}"
            self.stdout.write(f"{job.name}  every {job.interval:g}s  {when}  {job.help}")
