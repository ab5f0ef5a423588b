"""``python manage.py run_alerter``: consume the ingest stream in group "alerters" until SIGTERM.

SIGTERM or SIGINT lets the batch in hand finish (audited, alerted, acknowledged), then exits 0.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandParser

from core.worker import WorkerCommand
from rules.alerter import WRITER_SWITCH_INTERVAL, Alerter


class Command(WorkerCommand):
    help = "Match ingested events against the rules, audit them and queue alerts (a long-running worker)."
    name = "alerter"

    def add_worker_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", default=None, help="Consumer name in the group (default: host-pid-random).")
        parser.add_argument(
            "--serial",
            action="store_true",
            help="Audit and finish each batch (alerts, acknowledgement, flood counts) before reading the next, "
            "instead of auditing it in a writer thread and letting Redis finish it while later batches are "
            "evaluated.",
        )

    def setup(self, options: dict[str, Any]) -> None:
        if not options["serial"]:
            sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
        self.alerter = Alerter(options["consumer"], pipelined=not options["serial"])
        self.alerter.start_rule_listener()
        self.alerter.refresh_rules(force=True)

    def work(self) -> bool:
        return self.alerter.step() > 0  # the read blocks up to alerter_block_ms when idle

    def is_idle(self) -> bool:
        return self.alerter.idle

    def teardown(self) -> None:
        self.alerter.stop()
