"""A forwarder taking over the alerts a stalled one left pending: when to look, and which copies are resent.

A forwarder that dies (or hangs) leaves the alerts it read pending in its destination's group. Another one,
with an empty hand, claims those idle longer than ``forwarder_claim_idle_seconds`` (the takeover delay),
looking at most every half delay and every five seconds. Those whose stream entries are on the in-flight
record were being POSTed when the first one stopped, and the destination may have taken them: they are
sent again (a POST cannot be taken back, and one that may have failed must not be lost), marked
``resent`` and counted, so the destination and operators can tell the copy from a new alert.
"""

from __future__ import annotations

import logging
import time

import redis
from prometheus_client import Counter

from core import streams
from delivery.outcomes import Item

logger = logging.getLogger("mutt.forwarder")

Entry = tuple[bytes, dict[bytes, bytes]]


class Takeover:
    """One forwarder's takeovers on its stream and group. One thread uses an instance at a time."""

    def __init__(
        self, client: redis.Redis, *, stream: str, group: str, consumer: str, inflight_key: str, resent: Counter
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.inflight_key = inflight_key
        self.resent = resent  # counts the copies marked resent
        self.last = 0.0  # when it last looked (monotonic)

    def due(self, idle_seconds: float, *, consume: bool) -> bool:
        """Whether it is time to look for a stalled forwarder's alerts (``consume``: and start the next wait)."""
        now = time.monotonic()
        if now - self.last < min(idle_seconds / 2, 5.0):
            return False
        if consume:
            self.last = now
        return True

    def claim(self, limit: int, idle_seconds: float) -> list[Entry]:
        """Up to ``limit`` entries pending in the group for longer than ``idle_seconds``, now this consumer's."""
        idle_ms = int(idle_seconds * 1000)
        return streams.claim_abandoned(
            self.client, self.stream, self.group, self.consumer, idle_ms=idle_ms, count=limit
        )

    def mark_resent(self, items: list[Item]) -> list[Item]:
        """``items`` (taken over), those on the in-flight record marked ``resent``.

        The records stay: this forwarder may be held (rate limit) or die before its own POST, and the next
        one to take them over must still find them. Its own record before its POST overwrites them, and
        every outcome (delivered, retry, DLQ, given back) deletes them."""
        if not items:
            return items
        records = self.client.hmget(self.inflight_key, [entry_id for entry_id, _ in items])
        marked = [
            (entry_id, {**alert, "resent": True} if record is not None else alert)
            for (entry_id, alert), record in zip(items, records, strict=True)
        ]
        resent = sum(1 for record in records if record is not None)
        if resent:
            self.resent.inc(resent)
            logger.warning("alerts taken over mid-request are sent again, marked resent", extra={"count": resent})
        return marked
