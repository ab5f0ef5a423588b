"""One ingest request from body to stream: check, split, normalise, admit. No Django request here.

The caller (the HTTP view) has authenticated the key; this module decides the response. Every
refusal happens before the Redis script runs, so refused requests spend no rate-limit tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from configcenter.runtime import get_setting
from core import outage
from core.redis import get_redis
from ingest import body, metrics, ratelimit
from ingest.schema import Receipt, encode, normalise

logger = logging.getLogger("mutt.ingest")

REDIS_RETRY_AFTER = 5
# Refused items logged one by one per request; the rest are counted in one line (the response lists
# them all), so a hostile batch of 100,000 bad items cannot write 100,000 log lines.
MAX_LOGGED_REFUSALS = 100


@dataclass(frozen=True)
class IngestResult:
    status: int
    reason: str  # the metrics label; see ingest.metrics
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sender:
    """Who sent the request: the API key's name and public prefix, and the request's correlation id."""

    key_name: str
    key_prefix: str
    correlation_id: str


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
    receipt = Receipt(
        datetime.now(UTC),
        sender.correlation_id,
        sender.key_name,
        max_event_age=get_setting("max_event_age"),
        max_clock_skew=get_setting("max_clock_skew"),
    )
    try:
        kind, gzip = body.body_kind(content_type, content_encoding)
        raw = body.read_body(read, content_length, limit.size, named_by=limit.named_by, gzip=gzip)
        items = body.split_body(raw, kind, max_items=max_batch, max_item_bytes=max_event_bytes)
    except body.BodyRefused as refused:
        return IngestResult(refused.status, refused.reason, refused.body)

    payloads: list[bytes] = []
    event_ids: list[str] = []
    errors: list[dict[str, Any]] = []
    too_large = 0
    corrected = 0
    for item in items:
        if item.size > max_event_bytes:
            too_large += 1
            problems = {"item": f"is {item.size} bytes; the limit is {max_event_bytes} (ingest_max_event_bytes)"}
        else:
            event, problems = normalise(item.value, receipt)
            if event is not None:
                payload, problems = encode(event, item.value)
                if payload is not None:
                    payloads.append(payload)
                    event_ids.append(event["event_id"])
                    corrected += event["timestamp_corrected"]
                    continue
        error: dict[str, Any] = {"index": item.index, "errors": problems}
        if item.line is not None:
            error["line"] = item.line
        errors.append(error)

    if errors:
        _log_refusals(sender, errors)
    summary = {
        "accepted": len(payloads),
        "rejected": len(errors),
        "event_ids": event_ids,
        "correlation_id": sender.correlation_id,
        "errors": errors,
    }
    if not payloads:
        metrics.events("rejected").inc(len(errors))
        if too_large == len(items):
            detail = f"Every event exceeds ingest_max_event_bytes ({max_event_bytes} bytes); nothing was accepted."
            return IngestResult(413, "events_too_large", {"detail": detail, **summary})
        detail = "No event was accepted; see errors by index."
        return IngestResult(422, "invalid", {"detail": detail, **summary})
    return _admit(sender, payloads, summary, corrected)


def _log_refusals(sender: Sender, errors: list[dict[str, Any]]) -> None:
    """One WARNING per refused item: the client caused it, and the operator can find each one."""
    for error in errors[:MAX_LOGGED_REFUSALS]:
        reason = "; ".join(f"{name}: {message}" for name, message in error["errors"].items())
        logger.warning(
            "ingest refused an item: key=%s index=%s line=%s reason=%s request_id=%s",
            sender.key_name, error["index"], error.get("line", "-"), reason, sender.correlation_id,
        )  # fmt: skip
    if len(errors) > MAX_LOGGED_REFUSALS:
        logger.warning(
            "ingest refused %s more items of the same request, not logged one by one: key=%s request_id=%s",
            len(errors) - MAX_LOGGED_REFUSALS, sender.key_name, sender.correlation_id,
        )  # fmt: skip


def _admit(sender: Sender, payloads: list[bytes], summary: dict[str, Any], corrected: int) -> IngestResult:
    limits = ratelimit.Limits(
        global_rate=get_setting("ingest_max_rate"),
        key_rate=get_setting("ingest_key_max_rate"),
        max_depth=get_setting("ingest_max_queue_depth"),
    )
    if len(payloads) > limits.max_depth:
        # Even an empty queue could not take this batch, so 503's "retry after 2 s" would be forever.
        # The settings relation keeps ingest_max_batch within the depth; values stored before it may not.
        return IngestResult(
            413,
            "batch_over_queue_depth",
            {
                "detail": f"The batch has {len(payloads)} valid events but ingest_max_queue_depth is "
                f"{limits.max_depth}, so it could never be accepted; nothing was accepted. "
                f"Send batches of at most {limits.max_depth} events.",
                "max_queue_depth": limits.max_depth,
                "received": len(payloads),
            },
        )
    try:
        admission = ratelimit.admit(get_redis(), key_prefix=sender.key_prefix, payloads=payloads, limits=limits)
    except redis.RedisError as exc:
        # A timeout may hide a script that ran; the client's retry then duplicates events, which
        # downstream deduplication by event_id cannot catch. Rare, and better than losing them.
        # Every request is answered 503 (and Django logs each refusal); the outage itself is one line when
        # it starts, one a minute while it lasts, one when it ends, per process. An error that is not a
        # connection failure (Redis refusing writes: OOM, a read-only replica) refuses as surely: same lines.
        outage.REDIS.failed(exc, doing="ingest answers 503 with Retry-After")
        return IngestResult(
            503,
            "redis_unavailable",
            {
                "detail": "The event queue (Redis) is unavailable; nothing was accepted. Retry later.",
                "retry_after": REDIS_RETRY_AFTER,
            },
            {"Retry-After": str(REDIS_RETRY_AFTER)},
        )
    outage.REDIS.recovered()  # one attribute check unless Redis was down
    metrics.BACKLOG.set(admission.backlog)
    if admission.outcome is ratelimit.Outcome.ACCEPTED:
        metrics.events("accepted").inc(len(payloads))
        if corrected:
            metrics.TIMESTAMPS_CORRECTED.inc(corrected)
        if summary["rejected"]:
            metrics.events("rejected").inc(summary["rejected"])
        return IngestResult(202, "partial" if summary["rejected"] else "accepted", summary)

    retry_after = admission.retry_after or ratelimit.BACKPRESSURE_RETRY_AFTER
    headers = {"Retry-After": str(retry_after)}
    if admission.outcome is ratelimit.Outcome.RATE_LIMITED:
        if admission.limited_by == "key":
            limit = f"{limits.key_rate} events/s for API key {sender.key_name!r} (ingest_key_max_rate)"
        else:
            limit = f"{limits.global_rate} events/s for all senders (ingest_max_rate)"
        logger.info("ingest rate limited: %s, retry after %ss", limit, retry_after)
        return IngestResult(
            429,
            f"rate_limited_{admission.limited_by}",
            {
                "detail": f"Rate limit of {limit} exceeded; nothing was accepted. Retry after {retry_after} s.",
                "limit": admission.limited_by,
                "retry_after": retry_after,
            },
            headers,
        )
    logger.info("ingest backpressure: backlog %s, limit %s", admission.backlog, limits.max_depth)
    return IngestResult(
        503,
        "backpressure",
        {
            "detail": f"The ingest queue cannot take {len(payloads)} more events ({admission.backlog} waiting; "
            f"ingest_max_queue_depth is {limits.max_depth}); nothing was accepted. Retry after {retry_after} s.",
            "retry_after": retry_after,
            "backlog": admission.backlog,
        },
        headers,
    )
