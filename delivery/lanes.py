"""Several forwarders in one process, so that ``forwarder_concurrency`` requests are in flight at once.

With one alert per request a forwarder spends most of its time waiting for Moogsoft and Redis to
answer; more forwarders in the consumer group fill those waits. Each lane is a complete
:class:`~delivery.forwarder.Forwarder` with a consumer name of its own, so every shared rule holds
exactly as it does between forwarder processes: the circuit breaker (one half-open probe among all
lanes of all pods), the shared rate limit, the idempotency records and the takeover of a stalled
consumer's alerts all live in Redis. What more lanes change is what a crash can repeat: each lane may
have one request in flight whose delivery was not yet recorded.

The first lane runs in the worker's own loop (``run_forwarder``); the others run in threads, started
and stopped as ``forwarder_concurrency`` changes (read per use, like every runtime setting). A lane
told to stop finishes the request in hand, gives the alerts it holds back to the stream and leaves the
consumer group.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

import redis
from django.db import close_old_connections, connections

from configcenter.runtime import get_setting
from core import outage, streams
from delivery.destinations import DEFAULT, Destination
from delivery.forwarder import Forwarder

logger = logging.getLogger("mutt.forwarder")

BLOCK_MS = 500  # a lane's blocking read on an empty stream: also how long it may take to stop
CONSUMER_SWEEP_SECONDS = 60.0  # how often the consumers killed forwarders left in the group are removed
REST_SECONDS = 0.02  # after a step with nothing to send (breaker open, rate limited)
ERROR_PAUSE_SECONDS = 1.0


def step_forwarder(forwarder: Forwarder, block_ms: int) -> int:
    """One step of ``forwarder``; if Redis lost the forwarders' group (restarted empty), it is created again
    and the next step reads on (the alerter recreates it only when the alert stream itself is gone)."""
    try:
        return forwarder.step(block_ms=block_ms)
    except redis.ResponseError as exc:
        if not streams.is_missing_group(exc):
            raise
        streams.recreate_group(forwarder.client, forwarder.stream, forwarder.group, consumer=forwarder.consumer)
        return 0


class Lanes:
    """The worker's forwarder plus ``forwarder_concurrency - 1`` more in threads, all for one destination."""

    def __init__(
        self,
        consumer: str | None = None,
        *,
        client: redis.Redis | None = None,
        destination: Destination | str = DEFAULT,
    ) -> None:
        self.first = Forwarder(consumer, client=client, destination=destination)
        self._client = client
        self._destination = self.first.destination
        self._numbers = itertools.count(2)  # never reused: a stopping lane may still hold its name
        self._running: list[_Lane] = []
        self._stopping: list[_Lane] = []
        self._swept_at = -CONSUMER_SWEEP_SECONDS  # the first step sweeps

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """Match the lanes to the setting, then one step of the first lane; returns what it finished."""
        self.adjust()
        self.forget_dead_consumers()
        return step_forwarder(self.first, block_ms)

    def forget_dead_consumers(self) -> list[str]:
        """Now and then, remove from the group the consumers of forwarders that are gone: nothing pending,
        not seen for ``consumer_forget_idle_seconds`` (never one of this process's lanes). Returns their names.
        """
        now = time.monotonic()
        if now - self._swept_at < CONSUMER_SWEEP_SECONDS:
            return []
        self._swept_at = now
        first = self.first
        ours = [first.consumer, *(lane.forwarder.consumer for lane in [*self._running, *self._stopping])]
        try:
            removed = streams.forget_idle_consumers(
                first.client, first.stream, first.group,
                idle_seconds=get_setting("consumer_forget_idle_seconds"), keep=ours,
            )  # fmt: skip
        except redis.RedisError as exc:
            message = "could not look for consumers of stopped forwarders (%s); next sweep retries"
            outage.warn_or_report(exc, logger, message)
            return []
        if removed:
            logger.info("removed %d idle consumers of stopped forwarders", len(removed), extra={"consumers": removed})
        return removed

    def adjust(self) -> None:
        """Start or stop lanes until ``forwarder_concurrency`` requests can be in flight."""
        wanted = get_setting("forwarder_concurrency") - 1
        while len(self._running) < wanted:
            name = f"{self.first.consumer}.{next(self._numbers)}"
            lane = _Lane(Forwarder(name, client=self._client, destination=self._destination))
            lane.start()
            self._running.append(lane)
        while len(self._running) > wanted:
            lane = self._running.pop()
            lane.stop.set()
            self._stopping.append(lane)
        self._stopping = [lane for lane in self._stopping if lane.is_alive()]

    def idle(self) -> bool:
        """No lane holds alerts, nothing is scheduled for retry, unread or pending (see Forwarder.idle).

        An alert a lane is sending is still pending in the group, so the stream's state covers it."""
        lanes = [*self._running, *self._stopping]
        return not any(lane.forwarder.holding for lane in lanes) and self.first.idle()

    def close(self, timeout: float = 30.0) -> None:
        """Stop every lane (each finishes its request in hand and gives its alerts back), then the first."""
        lanes, self._running = [*self._running, *self._stopping], []
        self._stopping = []
        for lane in lanes:
            lane.stop.set()
        for lane in lanes:
            lane.join(timeout)
            if lane.is_alive():
                logger.warning("forwarder lane %s did not stop in time", lane.forwarder.consumer)
        self.first.close()


class _Lane(threading.Thread):
    """One forwarder looping in its own thread until told to stop."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__(name=f"forwarder-{forwarder.consumer}", daemon=True)
        self.forwarder = forwarder
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            down: set[outage.OutageReporter] = set()  # as in the worker loop: one line per outage, not per step
            while not self.stop.is_set():
                try:
                    sent = step_forwarder(self.forwarder, BLOCK_MS)
                    while down:
                        down.pop().recovered()
                except Exception as exc:
                    reporter = outage.reporter_for(exc)
                    if reporter is None:
                        logger.exception("forwarder lane %s: a step failed; carrying on", self.forwarder.consumer)
                    else:
                        reporter.failed(exc, doing="the forwarder holds its alerts")
                        down.add(reporter)
                    sent = 0
                    self.stop.wait(ERROR_PAUSE_SECONDS)
                finally:
                    close_old_connections()  # as the worker loop does: no broken or stale connection kept
                if not sent:
                    self.stop.wait(REST_SECONDS)
        finally:
            try:
                self.forwarder.close()
            except redis.RedisError:
                logger.warning("forwarder lane %s could not leave the group cleanly", self.forwarder.consumer)
            connections.close_all()  # this thread's own database connections
