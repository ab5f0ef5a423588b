"""``python manage.py run_forwarder [--destination moog]``: deliver a destination's stream until SIGTERM.

The destination is one registered in delivery/destinations/ (default ``moog``, Moogsoft: the alert stream).
``forwarder_concurrency`` lanes (see delivery/lanes.py) each keep one request in flight. SIGTERM or
SIGINT lets the requests in hand finish and their outcomes be recorded, gives the alerts read but not
sent back to the stream, then exits 0.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.worker import WorkerCommand
from delivery.destinations import DEFAULT, UnknownDestination
from delivery.lanes import Lanes
from delivery.status import COLLECTOR


class Command(WorkerCommand):
    help = "Deliver queued alerts to a destination, Moogsoft by default (a long-running worker)."
    name = "forwarder"
    idle_grace_seconds = 3.0

    def add_worker_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", default=None, help="Consumer name in the group (default: host-random).")
        parser.add_argument("--destination", default=DEFAULT, help=f"Registered destination (default {DEFAULT}).")

    def setup(self, options: dict[str, Any]) -> None:
        try:
            self.lanes = Lanes(options["consumer"], destination=options["destination"])
        except UnknownDestination as exc:
            raise CommandError(str(exc)) from None
        # This process's /metrics describes the destination it delivers to, not Moogsoft's.
        COLLECTOR.destination = options["destination"]

    def work(self) -> bool:
        # The retry and DLQ depths and the breaker state are read from Redis when /metrics is scraped
        # (delivery/status.py), not reported from here.
        return self.lanes.step() > 0

    def rest(self) -> None:
        time.sleep(0.02)  # nothing to send now (breaker open, rate limited): poll again shortly

    def is_idle(self) -> bool:
        return self.lanes.idle()

    def teardown(self) -> None:
        # Every lane finishes its request in hand; alerts read ahead or waiting for the rate limit go back
        # to the stream for the other forwarders, rather than waiting out forwarder_claim_idle_seconds as
        # pending entries of a consumer that is gone.
        self.lanes.close()
