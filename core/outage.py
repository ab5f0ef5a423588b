"""One log line per change of a dependency's state, not one per retry.

The workers hold their work and retry while Redis or PostgreSQL is down, once a second or faster; logging
each failure (with its traceback) buried everything else: a 20 s Redis outage wrote 85 tracebacks. A
:class:`OutageReporter` per dependency and process logs instead:

- the first failure: ``Redis unavailable (ConnectionError: ...); holding work and retrying``;
- while it lasts, at most once per ``repeat_seconds`` (a minute): ``Redis still unavailable after 60s
  (57 failures: ...)``;
- the first success after that: ``Redis available again after 63s (61 failures)``.

Down and still-down lines are WARNING (the work is held, nothing is lost), the recovery INFO, none with a
traceback: an outage is not a bug. Failures that are not an outage (:func:`reporter_for` answers None) are
for the caller to log as it always did. Thread-safe: the forwarder's lanes share one reporter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg2
import redis
from django.db import InterfaceError, OperationalError

logger = logging.getLogger("mutt.outage")

REPEAT_SECONDS = 60.0


class OutageReporter:
    def __init__(
        self,
        name: str,
        *,
        repeat_seconds: float = REPEAT_SECONDS,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.repeat_seconds = repeat_seconds
        self.log = log
        self.clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reported_at = 0.0
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException, *, doing: str = "") -> None:
        """Record a failure that comes from the dependency being unreachable (``doing``: what was held)."""
        now = self.clock()
        with self._lock:
            self._failures += 1
            if self._down_since is None:
                self._down_since = self._reported_at = now
                first = True
            elif now - self._reported_at >= self.repeat_seconds:
                self._reported_at = now
                first = False
            else:
                return
            failures, since = self._failures, self._down_since
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"  # one line, whatever the driver wrote
        extra = {"dependency": self.name, "outage": "down" if first else "still_down", "failures": failures}
        if first:
            held = f"; {doing}" if doing else ""
            self.log.warning("%s unavailable (%s)%s; retrying", self.name, what, held, extra=extra)
        else:
            self.log.warning(
                "%s still unavailable after %.0fs (%d failures; last: %s)", self.name, now - since, failures, what,
                extra=extra,
            )  # fmt: skip

    def recovered(self) -> None:
        """Record a success: logs once if the dependency was down. Cheap when it was not (hot paths call it)."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            failures, self._failures = self._failures, 0
        if since is not None:
            self.log.info(
                "%s available again after %.0fs (%d failures)", self.name, self.clock() - since, failures,
                extra={"dependency": self.name, "outage": "back", "failures": failures},
            )  # fmt: skip


REDIS = OutageReporter("Redis")
POSTGRESQL = OutageReporter("PostgreSQL")


def reporter_for(exc: BaseException) -> OutageReporter | None:
    """The reporter of the dependency whose unavailability ``exc`` (or an exception it was raised from)
    shows, or None when it is not an outage (a bug, a refusal of the data): connection errors and
    timeouts of Redis (also a Redis still loading its data), Django's OperationalError and InterfaceError."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, redis.ConnectionError | redis.TimeoutError):
            return REDIS
        if isinstance(current, OperationalError | InterfaceError | psycopg2.OperationalError | psycopg2.InterfaceError):
            return POSTGRESQL
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def warn_or_report(exc: BaseException, log: logging.Logger, message: str, *args: object, doing: str = "") -> None:
    """A failure the caller retries on its own: an outage goes to its reporter (one line per change of
    state, ``doing`` saying what is held meanwhile); anything else is logged at WARNING as ``message``,
    whose first ``%s`` is the error and whose other placeholders take ``args``."""
    reporter = reporter_for(exc)
    if reporter is None:
        log.warning(message, exc, *args)
    else:
        reporter.failed(exc, doing=doing)
