"""Prometheus metrics of ingest (served by the process's /metrics, defined elsewhere).

``reason`` says why a request ended as it did: ``accepted`` or ``partial`` (202), ``invalid`` (422),
``events_too_large``, ``body_too_large``, ``batch_too_large``, ``batch_over_queue_depth`` (413),
``malformed``, ``empty``, ``unreadable``, ``incomplete``, ``bad_content_length`` (400),
``unsupported_media_type``, ``unsupported_encoding`` (415), ``rate_limited_global``,
``rate_limited_key`` (429), ``backpressure``, ``redis_unavailable``, ``auth_unavailable`` (503),
``unauthenticated`` (401), ``forbidden`` (403), ``not_found`` (404), ``method_not_allowed`` (405),
``error`` (500).

``mutt_ingest_events_total`` counts the items admission checked (:mod:`ingest.admission`, from any
source): each is accepted or rejected (invalid or too large). Items refused as a whole (429, 503, 400,
413 for the body, the batch or the queue depth) are not counted: the client sends them again.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "mutt_ingest_requests_total",
    "HTTP ingest requests by response status and reason.",
    ["status", "reason"],
)
EVENTS = Counter(
    "mutt_ingest_events_total",
    "Events checked by ingest admission (from parsed HTTP requests and listeners), by outcome: accepted, "
    "rejected (invalid or too large), or the refusal of valid events: rate_limited, backpressure, unavailable, "
    "over_queue_depth.",
    ["outcome"],
)
REQUEST_SECONDS = Histogram(
    "mutt_ingest_request_seconds",
    "Time to handle one HTTP ingest request, from routing to response.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TIMESTAMPS_CORRECTED = Counter(
    "mutt_ingest_timestamps_corrected_total",
    "Events kept with their time replaced by the receive time: older than max_event_age or later than "
    "max_clock_skew (the event says so in timestamp_corrected and original_timestamp).",
)
BACKLOG = Gauge(
    "mutt_ingest_backlog",
    "Entries in the ingest stream (not yet acknowledged by the alerters), as last seen by ingest.",
    # Every web worker sees the same stream; with several workers the latest observation wins.
    multiprocess_mode="livemostrecent",
)


# The labelled series, looked up once per process: ``labels()`` validates and locks on every call.
@functools.cache
def requests(status: int, reason: str) -> Counter:
    """The ``mutt_ingest_requests_total`` series of one status and reason."""
    return REQUESTS.labels(str(status), reason)


@functools.cache
def events(outcome: str) -> Counter:
    """The ``mutt_ingest_events_total`` series of one outcome."""
    return EVENTS.labels(outcome)
