"""``python manage.py run_jobs``: run every declared job when it is due, until SIGTERM.

SIGTERM or SIGINT lets the job in hand finish, then exits 0. Any number may run: each job runs once
per interval across all of them (:mod:`retention.runner`). With ``--until-idle`` it runs what is due
now and exits.
"""

from __future__ import annotations

import time
from typing import Any

from core.audit import Actor
from core.jobs import registry
from core.worker import WorkerCommand
from retention.runner import JobRunner

# Looking at the schedule costs no query (the next times are in memory), so a short nap keeps SIGTERM prompt.
NAP_SECONDS = 0.5


class Command(WorkerCommand):
    help = "Run the scheduled jobs (audit partitions, …) when they are due (a long-running worker)."
    name = "jobs"

    def setup(self, options: dict[str, Any]) -> None:
        self.runner = JobRunner(registry().values(), actor=Actor.system("jobs"))

    def work(self) -> bool:
        self.runner.step()
        return False  # what ran is logged by the runner; the loop rests until the next is due

    def rest(self) -> None:
        time.sleep(min(NAP_SECONDS, self.runner.seconds_until_next()))
