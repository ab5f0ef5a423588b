"""The forwarder's counters, labelled by destination, with one forwarder's children bound once.

``labels()`` takes a lock and checks the label names on every call: a forwarder looks each child up when
it is made (or, for outcome and reason pairs, the first time it meets one), never per request.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "mutt_forwarder_requests_total", "Requests to a destination by outcome and reason.",
    ["destination", "outcome", "reason"],
)  # fmt: skip
REQUEST_SECONDS = Histogram(
    "mutt_forwarder_request_seconds", "Latency of requests to a destination.", ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
DELIVERED = Counter("mutt_forwarder_alerts_delivered_total", "Alerts a destination accepted.", ["destination"])
SKIPPED = Counter(
    "mutt_forwarder_alerts_already_delivered_total", "Redelivered alerts not sent again.", ["destination"]
)
RETRIES = Counter("mutt_forwarder_retries_scheduled_total", "Alerts scheduled for a delayed retry.", ["destination"])
RESENT = Counter(
    "mutt_forwarder_alerts_resent_total",
    "Alerts sent again, marked resent, although an earlier POST of them may have reached the destination: after "
    "a takeover of a forwarder that died mid-request, or after a timeout.",
    ["destination", "after"],
)
DEAD_LETTERED = Counter(
    "mutt_forwarder_dead_lettered_total", "Alerts moved to a destination's DLQ.", ["destination", "reason"]
)


class ForwarderMetrics:
    """The children of one destination's counters. One thread uses an instance at a time."""

    __slots__ = (
        "_requests", "delivered", "destination", "request_seconds", "resent_after_takeover", "resent_after_timeout",
        "retries", "skipped",
    )  # fmt: skip

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.request_seconds = REQUEST_SECONDS.labels(destination)
        self.delivered = DELIVERED.labels(destination)
        self.skipped = SKIPPED.labels(destination)
        self.retries = RETRIES.labels(destination)
        self.resent_after_takeover = RESENT.labels(destination, "takeover")
        self.resent_after_timeout = RESENT.labels(destination, "timeout")
        self._requests: dict[tuple[str, str], Counter] = {}

    def requests(self, outcome: str, reason: str) -> Counter:
        counter = self._requests.get((outcome, reason))
        if counter is None:
            counter = self._requests[outcome, reason] = REQUESTS.labels(self.destination, outcome, reason)
        return counter

    def dead_lettered(self, reason: str) -> Counter:
        return DEAD_LETTERED.labels(self.destination, reason)  # the DLQ path: not worth a cache
