"""The forwarder: alert stream → Moogsoft, exactly once in effect, whatever Moogsoft does.

``Forwarder.step()`` does one unit of work; ``run_forwarder`` loops over it. Per step:

1. due retries go back into the alert stream (atomically), so they are read like any alert;
2. the shared circuit breaker decides: attempt, send the one half-open probe, or wait (while open,
   nothing is attempted and no retry is used up);
3. a batch is read (alerts of a stalled forwarder are taken over first); alerts already delivered
   (idempotency record per event id) are acknowledged without sending;
4. the shared rate limit grants a request or says how long to wait (the batch is kept meanwhile);
5. one POST over a pooled keep-alive connection; then, by outcome:
   2xx → idempotency records and acknowledgement in one transaction;
   408/429/5xx/timeout/connection error → breaker failure, and each alert is scheduled for a retry
   (full-jitter backoff, or Retry-After) and acknowledged in one atomic step, or dead-lettered once
   ``moog_max_retries`` is used up; other 4xx → dead-lettered at once with status and response.
"""

from __future__ import annotations

import email.utils
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
import urllib3
from prometheus_client import Counter, Gauge, Histogram

from configcenter.runtime import get_setting
from delivery.breaker import CircuitBreaker
from delivery.destination import local_mock_url
from delivery.payloads import PayloadError, auth_headers, build_request
from delivery.ratelimit import SharedRateLimit
from delivery.retry import RetrySchedule, backoff_delay
from mutt_project import streams
from mutt_project.redis import get_redis, key

logger = logging.getLogger("mutt.forwarder")

DELIVERED_TTL = 86_400  # long enough to cover any redelivery after a crash
RETRYABLE_STATUSES = frozenset({408, 429})

REQUESTS = Counter(
    "mutt_forwarder_requests_total", "Requests to Moogsoft by outcome and reason.", ["outcome", "reason"]
)
REQUEST_SECONDS = Histogram(
    "mutt_forwarder_request_seconds", "Latency of requests to Moogsoft.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
DELIVERED = Counter("mutt_forwarder_alerts_delivered_total", "Alerts Moogsoft accepted.")
SKIPPED = Counter("mutt_forwarder_alerts_already_delivered_total", "Redelivered alerts not sent again.")
RETRIES = Counter("mutt_forwarder_retries_scheduled_total", "Alerts scheduled for a delayed retry.")
DEAD_LETTERED = Counter("mutt_forwarder_dead_lettered_total", "Alerts moved to the Moogsoft DLQ.", ["reason"])
RETRY_DEPTH = Gauge("mutt_forwarder_retry_schedule_depth", "Alerts waiting for a retry.")
DLQ_DEPTH = Gauge("mutt_forwarder_dlq_depth", "Entries in the Moogsoft dead-letter queue.")


def delivered_key(event_id: str) -> str:
    return key("delivered", event_id)


def moog_url() -> str:
    """The configured Moogsoft URL, or the local mock_moog that `mutt up` runs when none is set."""
    return get_setting("moog_url") or f"{local_mock_url()}/events"


@dataclass(frozen=True)
class Result:
    """How one request ended: ``delivered``, ``retry`` or ``permanent``, with a reason code."""

    outcome: str
    reason: str
    status: int | None = None
    retry_after: float | None = None
    excerpt: str = ""


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def classify(status: int | None, error: Exception | None = None, headers: Any = None, body: bytes = b"") -> Result:
    """Any 2xx delivered; 408, 429, 5xx, timeouts and connection errors retryable; other 4xx permanent."""
    if error is not None:
        reason = "timeout" if isinstance(error, urllib3.exceptions.TimeoutError) else "connection_error"
        return Result("retry", reason, excerpt=f"{type(error).__name__}: {error}"[:500])
    status = status or 0
    excerpt = body[:500].decode("utf-8", "replace")
    if 200 <= status < 300:
        return Result("delivered", "ok", status)
    retry_after = parse_retry_after(headers.get("Retry-After") if headers is not None else None)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Result("retry", f"http_{status}", status, retry_after, excerpt)
    return Result("permanent", f"http_{status}", status, None, excerpt)


@dataclass
class _Held:
    """Alerts read and not yet sent (waiting for the rate limit)."""

    items: list[tuple[bytes, dict[str, Any]]]
    not_before: float = 0.0
    claimed_at: float = field(default_factory=time.monotonic)


class Forwarder:
    def __init__(self, consumer: str | None = None, *, client: redis.Redis | None = None) -> None:
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.client = client or get_redis()
        self.stream = streams.alerts_stream()
        self.dlq = streams.dlq_stream("moog")
        self.group = streams.FORWARDERS_GROUP
        self.breaker = CircuitBreaker(self.client)
        self.rate_limit = SharedRateLimit(self.client)
        self.retries = RetrySchedule(self.client, self.stream, self.group)
        # One keep-alive connection per worker thread is enough; urllib3 must not retry on its own
        # (retries are ours, scheduled, and counted).
        self.http = urllib3.PoolManager(num_pools=4, maxsize=2, retries=False)
        self._held: _Held | None = None
        self._last_claim = 0.0
        streams.ensure_group(self.client, self.stream, self.group)

    # --- the step -----------------------------------------------------------------------------

    def step(self, block_ms: int = 1000) -> int:
        """Deliver at most one request's worth of alerts; returns how many alerts were finished."""
        self.retries.release_due(time.time())
        if self._held is not None and time.monotonic() < self._held.not_before:
            return 0  # still waiting for the rate limit
        decision = self.breaker.acquire(get_setting("circuit_breaker_timeout"))
        if decision == "wait":
            self._keep_held_claimed()
            return 0
        limit = 1 if decision == "probe" else get_setting("moog_batch_size")
        held = self._held or self._read(limit, block_ms)
        self._held = None
        if held is None or not held.items:
            return 0
        if len(held.items) > limit:  # the probe sends one alert; the rest wait for the verdict
            held, rest = _Held(held.items[:limit]), _Held(held.items[limit:])
            self._held = rest
        wait = self.rate_limit.take(get_setting("moog_rate_limit"), get_setting("moog_rate_period"))
        if wait > 0:
            held.not_before = time.monotonic() + wait
            self._held = _merge(held, self._held)
            return 0
        return self._send(held.items)

    def _read(self, limit: int, block_ms: int) -> _Held | None:
        items = self._claim_abandoned(limit) or self._read_new(limit, block_ms)
        if not items:
            return None
        fresh: list[tuple[bytes, dict[str, Any]]] = []
        done: list[bytes] = []
        poison: list[tuple[bytes, bytes, str]] = []
        for entry_id, fields in items:
            try:
                fresh.append((entry_id, streams.decode(fields)))
            except ValueError as exc:
                poison.append((entry_id, fields.get(streams.PAYLOAD_FIELD, b""), str(exc)))
        if poison:
            self._dead_letter(
                [
                    (entry_id, {"raw": raw.decode("utf-8", "replace")}, Result("permanent", "malformed", excerpt=error))
                    for entry_id, raw, error in poison
                ]
            )
        if fresh:
            pipe = self.client.pipeline(transaction=False)
            for _, alert in fresh:
                pipe.exists(delivered_key(alert.get("event_id", "")))
            already = pipe.execute()
            done = [entry_id for (entry_id, _), seen in zip(fresh, already, strict=True) if seen]
            fresh = [item for item, seen in zip(fresh, already, strict=True) if not seen]
        if done:
            pipe = self.client.pipeline(transaction=True)
            streams.ack_and_delete(pipe, self.stream, self.group, done)
            pipe.execute()
            SKIPPED.inc(len(done))
        return _Held(fresh)

    def _read_new(self, limit: int, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        response = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=limit, block=block_ms)
        return response[0][1] if response else []

    def _claim_abandoned(self, limit: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        idle = get_setting("forwarder_claim_idle_seconds")
        now = time.monotonic()
        if now - self._last_claim < min(idle / 2, 5.0):
            return []
        self._last_claim = now
        return streams.claim_abandoned(
            self.client, self.stream, self.group, self.consumer, idle_ms=int(idle * 1000), count=limit
        )

    def _keep_held_claimed(self) -> None:
        if self._held is not None:
            ids = [entry_id for entry_id, _ in self._held.items]
            streams.keep_claimed(self.client, self.stream, self.group, self.consumer, ids)

    # --- sending ------------------------------------------------------------------------------

    def _send(self, items: list[tuple[bytes, dict[str, Any]]]) -> int:
        fmt = get_setting("moog_format")
        try:
            request = build_request([alert for _, alert in items], fmt)
        except PayloadError:
            items = self._drop_unmappable(items, fmt)
            if not items:
                return 0
            request = build_request([alert for _, alert in items], fmt)
        headers = auth_headers(fmt)  # a masking mapping: its repr never shows the key
        headers.update(request.headers)
        url = moog_url()
        timeout = get_setting("moog_timeout")
        started = time.perf_counter()
        try:
            response = self.http.request(
                "POST", url, body=request.body, headers=headers, redirect=False,
                timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            )  # fmt: skip
            result = classify(response.status, headers=response.headers, body=response.data)
        except urllib3.exceptions.HTTPError as exc:
            result = classify(None, exc)
        REQUEST_SECONDS.observe(time.perf_counter() - started)
        REQUESTS.labels(result.outcome, result.reason).inc()
        self.breaker.record(result.outcome != "retry", get_setting("circuit_breaker_threshold"))
        if result.outcome == "delivered":
            self._mark_delivered(items)
        elif result.outcome == "retry":
            self._schedule_retries(items, result)
        else:
            self._dead_letter([(entry_id, alert, result) for entry_id, alert in items])
        # Acknowledged alerts leave the stream, so its length is the backlog the alerters shed on.
        streams.trim_acknowledged(self.client, self.stream)
        return len(items)

    def _drop_unmappable(
        self, items: list[tuple[bytes, dict[str, Any]]], fmt: str
    ) -> list[tuple[bytes, dict[str, Any]]]:
        """Dead-letter the alerts that cannot be turned into a Moogsoft event; return the others."""
        good, bad = [], []
        for entry_id, alert in items:
            try:
                build_request([alert], fmt)
                good.append((entry_id, alert))
            except PayloadError as exc:
                bad.append((entry_id, alert, Result("permanent", "malformed", excerpt=str(exc)[:500])))
        self._dead_letter(bad)
        return good

    def _mark_delivered(self, items: list[tuple[bytes, dict[str, Any]]]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for _, alert in items:
            pipe.set(delivered_key(alert["event_id"]), 1, ex=DELIVERED_TTL)
        streams.ack_and_delete(pipe, self.stream, self.group, [entry_id for entry_id, _ in items])
        pipe.execute()
        DELIVERED.inc(len(items))

    def _schedule_retries(self, items: list[tuple[bytes, dict[str, Any]]], result: Result) -> None:
        max_retries = get_setting("moog_max_retries")
        base, cap = get_setting("moog_retry_base_delay"), get_setting("moog_retry_max_delay")
        now = time.time()
        scheduled: list[tuple[float, bytes, bytes]] = []
        exhausted: list[tuple[bytes, dict[str, Any], Result]] = []
        for entry_id, alert in items:
            attempts = int(alert.get("attempts", 0)) + 1
            if attempts > max_retries:
                exhausted.append((entry_id, {**alert, "attempts": attempts}, _exhausted(result)))
                continue
            delay = result.retry_after if result.retry_after is not None else backoff_delay(attempts, base, cap)
            member = orjson.dumps({**alert, "attempts": attempts, "last_error": result.reason})
            scheduled.append((now + min(delay, cap), member, entry_id))
        self.retries.schedule_and_ack(scheduled)
        RETRIES.inc(len(scheduled))
        if exhausted:
            self._dead_letter(exhausted)
        logger.warning(
            "Moogsoft delivery failed; retrying later",
            extra={"reason": result.reason, "scheduled": len(scheduled), "exhausted": len(exhausted)},
        )

    def _dead_letter(self, entries: list[tuple[bytes, dict[str, Any], Result]]) -> None:
        """Move alerts to the Moogsoft DLQ with status, response excerpt, attempts and reason; acknowledge."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        for entry_id, alert, result in entries:
            pipe.xadd(
                self.dlq,
                {
                    "reason": result.reason,
                    "status": "" if result.status is None else result.status,
                    "response": result.excerpt,
                    "attempts": int(alert.get("attempts", 0)),
                    "event_id": alert.get("event_id", ""),
                    "source_id": entry_id,
                    "failed_at": datetime.now(UTC).isoformat(),
                    "e": orjson.dumps(alert),
                },
            )
            DEAD_LETTERED.labels(result.reason).inc()
        streams.ack_and_delete(pipe, self.stream, self.group, [entry_id for entry_id, _, _ in entries])
        pipe.execute()
        logger.error("alerts moved to the Moogsoft DLQ", extra={"count": len(entries), "reason": entries[0][2].reason})

    def idle(self) -> bool:
        """Nothing held, nothing scheduled for retry, nothing unread or pending in the stream."""
        if self._held is not None or self.retries.depth():
            return False
        groups = {g["name"].decode(): g for g in self.client.xinfo_groups(self.stream)}
        pending = groups.get(self.group, {}).get("pending", 0)
        return pending == 0 and streams.backlog(self.client, self.stream) == 0

    def report_depths(self) -> None:
        RETRY_DEPTH.set(self.retries.depth())
        DLQ_DEPTH.set(self.client.xlen(self.dlq))


def _exhausted(result: Result) -> Result:
    return Result("permanent", "retries_exhausted", result.status, None, f"{result.reason}: {result.excerpt}"[:500])


def _merge(first: _Held, second: _Held | None) -> _Held:
    if second is None:
        return first
    return _Held(first.items + second.items, first.not_before)
