"""The one shape of every long-running worker command (run_alerter, run_forwarder, run_remediation).

Parse arguments, turn SIGTERM/SIGINT into a flag, optionally serve Prometheus metrics, then loop:
one unit of work, then rest if there was nothing to do. The unit in hand always finishes before the
process exits 0; an exception in a unit is logged and the loop goes on (a bug or an outage must not
kill the worker, whose entries stay pending and are retried). A bug is logged with its traceback each
time; an outage of Redis or PostgreSQL once when it starts, once a minute while it lasts and once when
it ends (:mod:`core.outage`). The logic lives in plain classes that
tests drive directly; subclasses only wire them in.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from prometheus_client import start_http_server

from core import outage

logger = logging.getLogger("mutt.worker")


class WorkerCommand(BaseCommand):
    name = "worker"
    # How long a worker started with --until-idle must find nothing to do before it exits.
    idle_grace_seconds = 2.0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--metrics-port", type=int, default=0, help="Serve Prometheus metrics on this port.")
        parser.add_argument("--until-idle", action="store_true", help="Exit once there is nothing left to do.")
        self.add_worker_arguments(parser)

    def add_worker_arguments(self, parser: CommandParser) -> None:
        """Arguments of a particular worker."""

    # --- what a worker provides ---------------------------------------------------------------

    def setup(self, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def work(self) -> bool:
        """One unit of work; True when it did something."""
        raise NotImplementedError

    def rest(self) -> None:
        """Called after a unit that found nothing to do (a worker whose reads block needs no rest)."""

    def is_idle(self) -> bool:
        """Whether nothing is held or pending (checked before --until-idle exits)."""
        return True

    def teardown(self) -> None:
        """Called once the loop has ended."""

    # --- the loop -----------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = False

        def request_stop(signum: int, frame: object) -> None:
            logger.info("%s: signal %s, finishing the work in hand, then exiting", self.name, signum)
            self.stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr="127.0.0.1")
        self.setup(options)
        logger.info("%s started", self.name)
        idle_since = time.monotonic()
        down: set[outage.OutageReporter] = set()  # outages seen here, ended by the next unit that succeeds
        while not self.stopping:
            try:
                did_work = self.work()
                while down:
                    down.pop().recovered()
            except Exception as exc:
                reporter = outage.reporter_for(exc)
                if reporter is None:
                    logger.exception("%s: a unit of work failed; carrying on", self.name)
                else:
                    reporter.failed(exc, doing=f"the {self.name} holds its work")
                    down.add(reporter)
                did_work = False
                time.sleep(1)
            finally:
                close_old_connections()  # a long-lived worker must not keep a broken or stale connection
            now = time.monotonic()
            if did_work:
                idle_since = now
                continue
            if options["until_idle"] and now - idle_since > self.idle_grace_seconds and self.is_idle():
                break
            if not self.stopping:
                self.rest()
        self.teardown()
        logger.info("%s stopped", self.name)
