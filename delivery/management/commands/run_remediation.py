"""``python manage.py run_remediation``: a remediation pass every ``remediation_interval`` until SIGTERM.

SIGTERM or SIGINT lets the pass in hand finish (its replays recorded and notified), then exits 0.
The interval is read again after every pass, so a change applies without a restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import CommandParser

from configcenter.runtime import get_setting
from core.worker import WorkerCommand
from delivery.remediation import Remediator

logger = logging.getLogger("mutt.remediation")


class Command(WorkerCommand):
    help = "Replay transiently failed DLQ entries and move poison ones to the dead queue (a long-running worker)."
    name = "remediation"

    def add_worker_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one pass and exit.")

    def setup(self, options: dict[str, Any]) -> None:
        self.remediator = Remediator()
        self.once = options["once"]
        self.pass_started = 0.0

    def work(self) -> bool:
        self.pass_started = time.monotonic()
        try:
            result = self.remediator.step()
            if result.replayed or result.dead or result.skipped:
                logger.info(
                    "remediation pass",
                    extra={"replayed": result.replayed, "dead": result.dead, "skipped": result.skipped},
                )
        finally:
            if self.once:
                self.stopping = True
        return False  # a pass is followed by the interval's rest whatever it found

    def rest(self) -> None:
        """Sleep until the next pass in short slices, so a signal is honoured within half a second."""
        while not self.stopping:
            remaining = self.pass_started + float(get_setting("remediation_interval")) - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(0.5, remaining))
