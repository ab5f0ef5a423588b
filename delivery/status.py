"""The delivery state as it is, read from Redis: for the admin page and for every ``/metrics``.

The breaker, the retry schedule, the alerts forwarders hold and the Moogsoft DLQ all live in Redis,
shared by every forwarder. A gauge set by one process says only what that process last saw: the web
tier, which never forwards, used to export a breaker gauge it created at zero and an empty retry
depth, so it showed "closed, nothing waiting" during an outage. So these figures are never gauges a
process sets: :class:`DeliveryCollector` reads them from Redis when Prometheus scrapes (a handful of
commands in one round trip, every scrape interval), and the admin reads the same :func:`read_state`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.redis import get_redis
from delivery.breaker import CLOSED, STATE_CODES, breaker_key
from delivery.destinations import DEFAULT, get_destination
from delivery.retry import schedule_key

logger = logging.getLogger("mutt.delivery")


@dataclass(frozen=True)
class DeliveryState:
    breaker_state: str  # closed, half_open or open
    breaker_failures: int  # consecutive failures counted while closed
    breaker_opened_at: datetime | None
    retry_scheduled: int  # alerts in the retry schedule, waiting for their due time
    held: int  # alerts forwarders have read and not finished (in hand, in flight, or held by the breaker)
    unread: int  # alerts in the stream no forwarder has read yet
    dlq_depth: int  # entries in the Moogsoft DLQ

    @property
    def waiting(self) -> int:
        """Every alert not yet delivered nor dead-lettered."""
        return self.retry_scheduled + self.held + self.unread


def read_state(client: redis.Redis, destination: str = DEFAULT) -> DeliveryState:
    """The shared delivery state of ``destination`` now, in one round trip."""
    target = get_destination(destination)
    stream = target.stream()
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(breaker_key(target.name))
    pipe.zcard(schedule_key(target.name))
    pipe.xinfo_groups(stream)
    pipe.xlen(stream)
    pipe.xlen(target.dlq_stream())
    breaker, scheduled, groups, length, dlq_depth = pipe.execute(raise_on_error=False)
    for reply in (breaker, scheduled, length, dlq_depth):
        if isinstance(reply, Exception):
            raise reply
    fields = {k.decode(): v.decode() for k, v in breaker.items()}
    opened = fields.get("opened_at")
    group: dict[str, Any] = {}
    if not isinstance(groups, Exception):  # no stream yet: nothing held, nothing unread
        group = next((g for g in groups if _text(g["name"]) == target.group), {})
    held = int(group.get("pending") or 0)
    lag = group.get("lag")
    # Entries are deleted when acknowledged, so the stream holds the pending ones and the unread ones
    # (Redis's own lag is preferred; it is None when Redis cannot tell).
    unread = int(lag) if lag is not None else max(0, int(length) - held)
    return DeliveryState(
        breaker_state=fields.get("state", CLOSED),
        breaker_failures=int(fields.get("failures", 0)),
        breaker_opened_at=datetime.fromtimestamp(float(opened), UTC) if opened else None,
        retry_scheduled=int(scheduled),
        held=held,
        unread=unread,
        dlq_depth=int(dlq_depth),
    )


class DeliveryCollector(Collector):
    """Exports :func:`read_state` at scrape time; exports nothing (and says so in the log) when Redis
    cannot be read, rather than a value that is not true."""

    def __init__(self, destination: str = DEFAULT) -> None:
        self.destination = destination

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metric names, without reading Redis (the registry asks when the collector is registered)."""
        yield GaugeMetricFamily("mutt_forwarder_breaker_state", "", labels=["destination"])
        for name in _GAUGES:
            yield GaugeMetricFamily(name, "")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            state = read_state(get_redis(), self.destination)
        except (redis.RedisError, OSError) as exc:
            logger.warning("delivery state not exported: Redis cannot be read (%s)", type(exc).__name__)
            return
        breaker = GaugeMetricFamily(
            "mutt_forwarder_breaker_state",
            "Circuit breaker state (shared, read from Redis): 0 closed, 1 half-open, 2 open.",
            labels=["destination"],
        )
        breaker.add_metric([self.destination], STATE_CODES.get(state.breaker_state, 0))
        yield breaker
        for name, text, value in (
            ("mutt_forwarder_retry_schedule_depth", "Alerts waiting in the retry schedule.", state.retry_scheduled),
            ("mutt_forwarder_alerts_held", "Alerts read by forwarders and not yet finished.", state.held),
            ("mutt_forwarder_alerts_unread", "Alerts in the stream no forwarder has read yet.", state.unread),
            ("mutt_forwarder_dlq_depth", "Entries in the Moogsoft dead-letter queue.", state.dlq_depth),
        ):
            yield GaugeMetricFamily(name, text, value=value)


_GAUGES = (
    "mutt_forwarder_retry_schedule_depth",
    "mutt_forwarder_alerts_held",
    "mutt_forwarder_alerts_unread",
    "mutt_forwarder_dlq_depth",
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


COLLECTOR = DeliveryCollector()
REGISTRY.register(COLLECTOR)  # once per process: the default registry every /metrics of a worker serves
