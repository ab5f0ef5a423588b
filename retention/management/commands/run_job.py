"""``python manage.py run_job NAME``: run one job once, now, for an operator (``--list`` names them).

It takes the job's lock like any runner, so it never overlaps a ``run_jobs`` running the same job, and
its run counts as the job's latest: the next is due one interval later. Exits non-zero when the job
failed or was locked.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.audit import Actor
from core.jobs import JobOutcome, UnknownJob, get_job, registry
from retention.runner import JobRunner


class Command(BaseCommand):
    help = "Run one scheduled job once, now (see run_jobs for the schedule)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="The job to run.")
        parser.add_argument("--list", action="store_true", help="List the jobs and their intervals.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"] or not options["name"]:
            for job in sorted(registry().values(), key=lambda job: job.name):
                self.stdout.write(f"{job.name}  every {job.interval:g}s  {job.help}")
            return
        try:
            job = get_job(options["name"])
        except UnknownJob:
            raise CommandError(f"no job named {options['name']!r}; `run_job --list` names them") from None
        runner = JobRunner([job], actor=Actor.cli())
        result = runner.run_now(job)
        self.stdout.write(f"{job.name}: {result.outcome}: {result.summary}")
        if result.outcome in (JobOutcome.FAILED, JobOutcome.LOCKED):
            raise CommandError(f"{job.name} {result.outcome}")
