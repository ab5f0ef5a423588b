"""One HTTP ingest request from body to response: read and split the body, admit its items, answer.

No Django request here. The caller (the HTTP view) has authenticated the key; the items go through
:mod:`ingest.admission`, the entry point every source shares, and this module turns its outcome into
the HTTP status and body. A body refused as a whole (415, 413, 400) never reaches admission.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from configcenter.runtime import get_setting
from ingest import body
from ingest.admission import REDIS_RETRY_AFTER, AdmissionResult, Refusal, Sender, admit
from ingest.ratelimit import BACKPRESSURE_RETRY_AFTER


@dataclass(frozen=True)
class IngestResult:
    status: int
    reason: str  # the metrics label; see ingest.metrics
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def ingest(
    *,
    sender: Sender,
    content_type: str,
    content_encoding: str,
    content_length: str | None,
    read: Callable[[int], bytes],
) -> IngestResult:
    """Handle one request body; runtime settings are read here, per request."""
    max_event_bytes: int = get_setting("ingest_max_event_bytes")
    max_batch: int = get_setting("ingest_max_batch")
    limit = body.body_limit(
        max_body_bytes=get_setting("ingest_max_body_bytes"), max_event_bytes=max_event_bytes, max_batch=max_batch
    )
    try:
        kind, gzip = body.body_kind(content_type, content_encoding)
        raw = body.read_body(read, content_length, limit.size, named_by=limit.named_by, gzip=gzip)
        items = body.split_body(raw, kind, max_items=max_batch, max_item_bytes=max_event_bytes)
    except body.BodyRefused as refused:
        return IngestResult(refused.status, refused.reason, refused.body)
    return _response(sender, admit(sender, items, max_event_bytes=max_event_bytes), max_event_bytes)


def _response(sender: Sender, result: AdmissionResult, max_event_bytes: int) -> IngestResult:
    summary = {
        "accepted": len(result.event_ids),
        "rejected": len(result.errors),
        "event_ids": result.event_ids,
        "correlation_id": sender.correlation_id,
        "errors": result.errors,
    }
    if result.refusal is not None:
        return _refused(sender, result, result.refusal)
    if result.event_ids:
        return IngestResult(202, "partial" if result.errors else "accepted", summary)
    if len(result.too_large) == result.count:
        detail = f"Every event exceeds ingest_max_event_bytes ({max_event_bytes} bytes); nothing was accepted."
        return IngestResult(413, "events_too_large", {"detail": detail, **summary})
    detail = "No event was accepted; see errors by index."
    return IngestResult(422, "invalid", {"detail": detail, **summary})


def _refused(sender: Sender, result: AdmissionResult, refusal: Refusal) -> IngestResult:
    """The valid events were refused as a whole: nothing was accepted, and the client may retry."""
    if refusal is Refusal.UNAVAILABLE:
        return IngestResult(
            503,
            "redis_unavailable",
            {
                "detail": "The event queue (Redis) is unavailable; nothing was accepted. Retry later.",
                "retry_after": REDIS_RETRY_AFTER,
            },
            {"Retry-After": str(REDIS_RETRY_AFTER)},
        )
    limits = result.limits
    valid = len(result.event_ids)
    if refusal is Refusal.OVER_QUEUE_DEPTH:
        return IngestResult(
            413,
            "batch_over_queue_depth",
            {
                "detail": f"The batch has {valid} valid events but ingest_max_queue_depth is "
                f"{limits.max_depth}, so it could never be accepted; nothing was accepted. "
                f"Send batches of at most {limits.max_depth} events.",
                "max_queue_depth": limits.max_depth,
                "received": valid,
            },
        )
    retry_after = result.retry_after or BACKPRESSURE_RETRY_AFTER
    headers = {"Retry-After": str(retry_after)}
    if refusal is Refusal.RATE_LIMITED:
        if result.limited_by == "key":
            limit = f"{limits.key_rate} events/s for API key {sender.name!r} (ingest_key_max_rate)"
        else:
            limit = f"{limits.global_rate} events/s for all senders (ingest_max_rate)"
        return IngestResult(
            429,
            f"rate_limited_{result.limited_by}",
            {
                "detail": f"Rate limit of {limit} exceeded; nothing was accepted. Retry after {retry_after} s.",
                "limit": result.limited_by,
                "retry_after": retry_after,
            },
            headers,
        )
    return IngestResult(
        503,
        "backpressure",
        {
            "detail": f"The ingest queue cannot take {valid} more events ({result.backlog} waiting; "
            f"ingest_max_queue_depth is {limits.max_depth}); nothing was accepted. Retry after {retry_after} s.",
            "retry_after": retry_after,
            "backlog": result.backlog,
        },
        headers,
    )
