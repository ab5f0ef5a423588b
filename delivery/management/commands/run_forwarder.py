"""``python manage.py run_forwarder``: deliver the alert stream to Moogsoft until SIGTERM.

SIGTERM or SIGINT lets the request in hand finish and its outcome be recorded, then exits 0.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandParser

from delivery.forwarder import Forwarder
from mutt_project.worker import WorkerCommand

DEPTH_REPORT_SECONDS = 5.0


class Command(WorkerCommand):
    help = "Deliver queued alerts to Moogsoft (a long-running worker)."
    name = "forwarder"
    idle_grace_seconds = 3.0

    def add_worker_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", default=None, help="Consumer name in the group (default: host-random).")

    def setup(self, options: dict[str, Any]) -> None:
        self.forwarder = Forwarder(options["consumer"])
        self.last_report = 0.0

    def work(self) -> bool:
        now = time.monotonic()
        if now - self.last_report > DEPTH_REPORT_SECONDS:
            self.forwarder.report_depths()
            self.last_report = now
        return self.forwarder.step(block_ms=500) > 0

    def rest(self) -> None:
        time.sleep(0.02)  # nothing to send now (breaker open, rate limited): poll again shortly

    def is_idle(self) -> bool:
        return self.forwarder.idle()

    def teardown(self) -> None:
        from mutt_project import streams

        streams.forget_consumer_if_done(
            self.forwarder.client, self.forwarder.stream, self.forwarder.group, self.forwarder.consumer
        )
