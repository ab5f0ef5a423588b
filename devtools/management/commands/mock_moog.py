"""``python manage.py mock_moog [--host 127.0.0.1] [--port 18080]``: run the Moogsoft stand-in until SIGTERM.

SIGTERM or SIGINT stops accepting, lets held requests go, closes connections and exits 0. Without
``--follow-moog-url`` it needs neither the database nor Redis (no system checks), so it starts in well
under a second. With it (how ``mutt up`` starts the mock before it can read settings), it serves only
while the ``moog_url`` setting is empty or points at the mock, re-reading it every second.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from delivery.destinations.moogsoft import configured_moog_url, is_local_mock
from devtools.mock_moog import MockMoog

logger = logging.getLogger("mutt.mock_moog")

FOLLOW_INTERVAL = 1.0


class Command(BaseCommand):
    help = "Run mock_moog, a local Moogsoft stand-in that records deliveries and fails on request."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument(
            "--port", type=int, default=None, help="Port (default MUTT_MOCK_MOOG_PORT, 18080; 0 picks a free one)."
        )
        parser.add_argument("--max-events", type=int, default=100_000, help="Events kept for GET /events.")
        parser.add_argument(
            "--follow-moog-url",
            action="store_true",
            help="Serve only while the moog_url setting is empty or names this mock (checked every second).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            logger.info("signal %s: mock_moog stopping", signum)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.host = options["host"]
        self.port = settings.MUTT_MOCK_MOOG_PORT if options["port"] is None else options["port"]
        self.max_events = options["max_events"]
        self.idle_logged = False
        mock: MockMoog | None = None
        try:
            if not options["follow_moog_url"]:
                mock = self._start()
                while not stop.wait(0.5):
                    pass
                return
            while not stop.is_set():
                mock = self._follow(mock)
                stop.wait(FOLLOW_INTERVAL)
        finally:
            if mock is not None:
                mock.close()
                self.stdout.write("mock_moog stopped")

    def _follow(self, mock: MockMoog | None) -> MockMoog | None:
        """Start or stop serving to match ``moog_url``; an unreadable setting changes nothing."""
        moog_url = configured_moog_url()
        if moog_url is None:
            return mock
        if is_local_mock(moog_url):
            return mock or self._start()
        if mock is not None:
            mock.close()
            self.stdout.write("mock_moog stopped")
        if mock is not None or not self.idle_logged:
            logger.info("moog_url names a real Moogsoft; mock_moog is not serving")
            self.idle_logged = True
        return None

    def _start(self) -> MockMoog:
        try:
            mock = MockMoog(self.host, self.port, max_events=self.max_events)
        except OSError as exc:
            raise CommandError(f"mock_moog cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        # Served from a thread: shutting the server down from the thread running serve_forever would deadlock.
        mock.start()
        logger.info("mock_moog listening", extra={"url": mock.url})
        self.stdout.write(f"mock_moog listening on {mock.url}")
        self.stdout.flush()
        return mock
