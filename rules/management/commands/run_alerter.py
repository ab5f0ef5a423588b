"""``python manage.py run_alerter``: consume the ingest stream in group "alerters" until SIGTERM.

SIGTERM or SIGINT lets the batch in hand finish (audited, alerted, acknowledged), then exits 0.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import start_http_server

from rules.alerter import Alerter
from rules.partitions import ensure_partitions

logger = logging.getLogger("mutt.alerter")


class Command(BaseCommand):
    help = "Match ingested events against the rules, audit them and queue alerts (a long-running worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", default=None, help="Consumer name in the group (default: host-pid-random).")
        parser.add_argument("--metrics-port", type=int, default=0, help="Serve Prometheus metrics on this port.")
        parser.add_argument("--until-idle", action="store_true", help="Exit once the stream has nothing to read.")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = {"flag": False}

        def request_stop(signum: int, frame: object) -> None:
            logger.info("signal %s: finishing the batch in hand, then exiting", signum)
            stopping["flag"] = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr="127.0.0.1")
        ensure_partitions()
        alerter = Alerter(options["consumer"])
        alerter.start_rule_listener()
        alerter.refresh_rules(force=True)
        logger.info("alerter started", extra={"consumer": alerter.consumer})
        idle_since = time.monotonic()
        while not stopping["flag"]:
            try:
                done = alerter.step()
            except Exception:
                # A bug or an outage must not kill the worker: log, pause, carry on (entries stay pending).
                logger.exception("alerter step failed")
                time.sleep(1)
                continue
            if done:
                idle_since = time.monotonic()
            elif options["until_idle"] and time.monotonic() - idle_since > 2:
                break
        alerter.stop()
        logger.info("alerter stopped", extra={"consumer": alerter.consumer})
