"""The one way events enter MUTT: a sender and its items in, one outcome per item out.

Every source calls this: the HTTP view (:mod:`ingest.pipeline`, with the items of a request body),
and the syslog and SNMP-trap listeners (with what they decoded from a datagram). One call:

1. checks each item on its own: too large (its size as received, over ``ingest_max_event_bytes``),
   invalid (the field errors of :func:`ingest.schema.normalise`), or not storable (``encode``). An item
   refused here does not stop the others, and spends no rate-limit tokens;
2. admits the valid ones together, in the one Redis round trip of :mod:`ingest.ratelimit`: queued on
   the ingest stream, or refused as a whole (rate limited, backpressure, Redis unavailable).

The result holds what the HTTP response is made of (event ids, errors by index) without a per-item
object; :meth:`AdmissionResult.outcomes` spells out one outcome per item for callers that want it.
Every refusal is logged here (one line per item up to a bound), so each source logs alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from configcenter.runtime import get_setting
from core import exactjson, outage
from core.context import new_request_id
from core.contracts import CanonicalEvent
from core.redis import get_redis
from ingest import metrics, ratelimit
from ingest.schema import FieldErrors, Receipt, encode, normalise

logger = logging.getLogger("mutt.ingest")

REDIS_RETRY_AFTER = 5
# Refused items logged one by one per call; the rest are counted in one line (the caller gets them
# all), so a hostile batch of 100,000 bad items cannot write 100,000 log lines.
MAX_LOGGED_REFUSALS = 100


class Refusal(StrEnum):
    """Why an item was not queued."""

    INVALID = "invalid"  # its field errors say why
    TOO_LARGE = "too_large"  # over ingest_max_event_bytes
    RATE_LIMITED = "rate_limited"  # the global or the sender's rate (retry_after, limited_by)
    BACKPRESSURE = "backpressure"  # the stream holds ingest_max_queue_depth events (retry_after)
    OVER_QUEUE_DEPTH = "over_queue_depth"  # the call alone has more valid events than the queue may ever hold
    UNAVAILABLE = "unavailable"  # Redis did not answer (retry_after)


class Sender(NamedTuple):  # a tuple rather than a frozen dataclass: made per request, in two calls, not five
    """Who sends: ``name`` is stamped on each event (``ingested_by``); ``rate_key`` is what the per-sender
    rate limit (``ingest_key_max_rate``) keys on; ``address`` is the client's address, when known."""

    name: str
    rate_key: str
    address: str | None
    correlation_id: str  # the request id of an HTTP request, one per datagram for a listener

    @classmethod
    def listener(cls, name: str, address: str, correlation_id: str | None = None) -> Sender:
        """A listener's sender: each address it hears from has a rate bucket of its own (one chatty device
        cannot use up another's), apart from every API key's; all share the global one."""
        return cls(name, f"listener:{name}:{address}", address, correlation_id or new_request_id())


class Item(NamedTuple):
    """One item of a call. ``size`` is its size in bytes as received (0: not measured, when the source
    knows no item can be too large); ``line`` its line number when the source is line-based."""

    # Shadows tuple.index on purpose (no caller searches an item); mypy flags any such field name.
    index: int  # type: ignore[assignment]  # its position in the call, from 0
    value: Any
    size: int
    line: int | None


class ItemOutcome(NamedTuple):
    index: int  # type: ignore[assignment]  # as Item's
    event_id: str | None  # set when it was queued
    refusal: Refusal | None  # set when it was not
    errors: FieldErrors  # by field, when it was refused on its own (invalid or too large)


# Not frozen: a frozen dataclass's __init__ makes one call per field, and this is made once per request.
@dataclass(slots=True)
class AdmissionResult:
    """What one call did. ``event_ids`` are the valid items' events in order: queued unless ``refusal``
    says why not; ``errors`` the items refused on their own (``{"index", "errors", "line"?}``, the shape
    of the HTTP response's ``errors``), ``too_large`` the indices of those that were too large."""

    count: int
    event_ids: list[str]
    errors: list[dict[str, Any]]
    too_large: list[int]
    limits: ratelimit.Limits  # the rates and queue depth in force for this call
    refusal: Refusal | None = None
    retry_after: int | None = None
    limited_by: str | None = None  # "global" or "key" when rate limited
    backlog: int | None = None  # events in the stream, as the Redis round trip saw them

    @property
    def accepted(self) -> int:
        return 0 if self.refusal is not None else len(self.event_ids)

    def outcomes(self) -> list[ItemOutcome]:
        """One outcome per item, by index."""
        refused_alone = {error["index"]: error["errors"] for error in self.errors}
        too_large = set(self.too_large)
        events = iter(self.event_ids)
        outcomes = []
        for index in range(self.count):
            errors = refused_alone.get(index)
            if errors is not None:
                refusal = Refusal.TOO_LARGE if index in too_large else Refusal.INVALID
                outcomes.append(ItemOutcome(index, None, refusal, errors))
            elif self.refusal is None:
                outcomes.append(ItemOutcome(index, next(events), None, {}))
            else:
                next(events)
                outcomes.append(ItemOutcome(index, None, self.refusal, {}))
        return outcomes


def item_size(value: Any) -> int:
    """The size of ``value`` as compact JSON; 0 when it is nested too deeply to write (the event made
    from it cannot be written either, and is refused for that)."""
    written = exactjson.dumps(value)
    return 0 if written is None else len(written)


def admit_values(sender: Sender, values: Iterable[Any]) -> AdmissionResult:
    """Admit already-decoded items (dicts, as an HTTP client would send them), measured here."""
    return admit(sender, [Item(index, value, item_size(value), None) for index, value in enumerate(values)])


def admit(sender: Sender, items: Sequence[Item], *, max_event_bytes: int | None = None) -> AdmissionResult:
    """Normalise and validate ``items``, then queue the valid ones in one Redis round trip.

    Settings are read per call, so a change applies at once; a caller that has read
    ``ingest_max_event_bytes`` already (to split its input) passes it, and it is read once.
    """
    if max_event_bytes is None:
        max_event_bytes = get_setting("ingest_max_event_bytes")
    receipt = Receipt(
        datetime.now(UTC),
        sender.correlation_id,
        sender.name,
        max_event_age=get_setting("max_event_age"),
        max_clock_skew=get_setting("max_clock_skew"),
        # One more read of the snapshot already cached for this request (a dict lookup), once per request.
        retention_days=get_setting("event_retention_days"),
    )
    payloads: list[bytes] = []
    event_ids: list[str] = []
    errors: list[dict[str, Any]] = []
    too_large: list[int] = []
    corrected = 0
    for item in items:
        if item.size > max_event_bytes:
            too_large.append(item.index)
            problems = _too_large(item.size, max_event_bytes)
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
    return _enqueue(
        sender, count=len(items), payloads=payloads, event_ids=event_ids, errors=errors, too_large=too_large,
        corrected=corrected,
    )  # fmt: skip


def admit_events(sender: Sender, events: Sequence[CanonicalEvent]) -> AdmissionResult:
    """Admit events already in canonical form (made by :func:`ingest.schema.normalise`), as they are:
    only what the stream and the audit log cannot take is refused (too deep, a NUL, and an event whose
    JSON, canonical fields included, is over ``ingest_max_event_bytes``)."""
    max_event_bytes: int = get_setting("ingest_max_event_bytes")
    payloads: list[bytes] = []
    event_ids: list[str] = []
    errors: list[dict[str, Any]] = []
    too_large: list[int] = []
    corrected = 0
    for index, event in enumerate(events):
        payload, problems = encode(event, event)
        if payload is not None and len(payload) > max_event_bytes:
            too_large.append(index)
            problems = _too_large(len(payload), max_event_bytes)
        elif payload is not None:
            payloads.append(payload)
            event_ids.append(event["event_id"])
            corrected += event["timestamp_corrected"]
            continue
        errors.append({"index": index, "errors": problems})
    return _enqueue(
        sender, count=len(events), payloads=payloads, event_ids=event_ids, errors=errors, too_large=too_large,
        corrected=corrected,
    )  # fmt: skip


def _enqueue(
    sender: Sender,
    *,
    count: int,
    payloads: list[bytes],
    event_ids: list[str],
    errors: list[dict[str, Any]],
    too_large: list[int],
    corrected: int,
) -> AdmissionResult:
    """The valid events (``payloads``) onto the ingest stream, or the reason they were not."""
    if errors:
        _log_refusals(sender, errors)
        metrics.events("rejected").inc(len(errors))
    limits = ratelimit.Limits(
        global_rate=get_setting("ingest_max_rate"),
        key_rate=get_setting("ingest_key_max_rate"),
        max_depth=get_setting("ingest_max_queue_depth"),
    )
    result = AdmissionResult(count, event_ids, errors, too_large, limits)
    if not payloads:
        return result
    if len(payloads) > limits.max_depth:
        # Even an empty queue could not take them, so "retry after 2 s" would be forever. The settings
        # relation keeps ingest_max_batch within the depth; values stored before it, and listeners, may not.
        logger.info(
            "ingest refused %s events from %s: more than the queue may ever hold (%s)",
            len(payloads), sender.name, limits.max_depth,
        )  # fmt: skip
        return _refused(result, Refusal.OVER_QUEUE_DEPTH, len(payloads))
    try:
        admission = ratelimit.admit(get_redis(), rate_key=sender.rate_key, payloads=payloads, limits=limits)
    except redis.RedisError as exc:
        # A timeout may hide a script that ran; the client's retry then duplicates events, which
        # downstream deduplication by event_id cannot catch. Rare, and better than losing them.
        # The outage is one line when it starts, one a minute while it lasts, one when it ends, per
        # process. An error that is not a connection failure (Redis refusing writes: OOM, a read-only
        # replica) refuses as surely: same lines.
        outage.REDIS.failed(exc, doing="ingest answers 503 with Retry-After and refuses what listeners receive")
        result.retry_after = REDIS_RETRY_AFTER
        return _refused(result, Refusal.UNAVAILABLE, len(payloads))
    outage.REDIS.recovered()  # one attribute check unless Redis was down
    metrics.BACKLOG.set(admission.backlog)
    result.backlog = admission.backlog
    if admission.outcome is ratelimit.Outcome.ACCEPTED:
        metrics.events("accepted").inc(len(payloads))
        if corrected:
            metrics.TIMESTAMPS_CORRECTED.inc(corrected)
        return result
    result.retry_after = admission.retry_after or ratelimit.BACKPRESSURE_RETRY_AFTER
    if admission.outcome is ratelimit.Outcome.RATE_LIMITED:
        logger.info(
            "ingest rate limited: %s (%s limit), retry after %ss",
            sender.name, admission.limited_by, result.retry_after,
        )  # fmt: skip
        result.limited_by = admission.limited_by
        return _refused(result, Refusal.RATE_LIMITED, len(payloads))
    logger.info("ingest backpressure: backlog %s, limit %s", admission.backlog, limits.max_depth)
    return _refused(result, Refusal.BACKPRESSURE, len(payloads))


def _refused(result: AdmissionResult, refusal: Refusal, count: int) -> AdmissionResult:
    """``result`` refusing its ``count`` valid events as a whole, counted under the refusal's name
    (``mutt_ingest_events_total``), so a listener's refused datagrams are as visible as HTTP's 429s."""
    result.refusal = refusal
    metrics.events(refusal.value).inc(count)
    return result


def _too_large(size: int, limit: int) -> FieldErrors:
    return {"item": f"is {size} bytes; the limit is {limit} (ingest_max_event_bytes)"}


def _log_refusals(sender: Sender, errors: list[dict[str, Any]]) -> None:
    """One WARNING per refused item: the client caused it, and the operator can find each one."""
    for error in errors[:MAX_LOGGED_REFUSALS]:
        reason = "; ".join(f"{name}: {message}" for name, message in error["errors"].items())
        logger.warning(
            "ingest refused an item: key=%s index=%s line=%s reason=%s request_id=%s",
            sender.name, error["index"], error.get("line", "-"), reason, sender.correlation_id,
        )  # fmt: skip
    if len(errors) > MAX_LOGGED_REFUSALS:
        logger.warning(
            "ingest refused %s more items of the same request, not logged one by one: key=%s request_id=%s",
            len(errors) - MAX_LOGGED_REFUSALS, sender.name, sender.correlation_id,
        )  # fmt: skip
