"""The forwarder: alert stream → Moogsoft, at least once, every copy identifiable, whatever Moogsoft does.

``Forwarder.step()`` does one unit of work; ``run_forwarder`` loops over it, in as many lanes as
``forwarder_concurrency`` asks (delivery/lanes.py). Per step:

1. one Redis script, the gate (delivery/gate.py): due retries go back into the alert stream
   (atomically), so they are read like any alert; the shared circuit breaker decides: attempt, send the
   one half-open probe, or wait (while open, nothing is attempted, read or taken, and no retry is used
   up); alerts already in hand are checked against their idempotency records (those already delivered
   are acknowledged without sending), and the next batch is read ahead; the shared rate limit grants a
   request or says how long to wait (the alerts stay in hand meanwhile); granted, the alerts about to
   be sent are recorded as in flight (their stream entry ids), in the same call;
2. every few seconds the gate reads nothing and alerts of a stalled forwarder are taken over instead;
   when there are none, or the gate found the stream empty, a blocking read awaits the next alert;
3. one POST over a kept-alive connection (delivery/transport.py), once every alert in it is recorded as
   in flight (those the gate did not record, in one more call); then, by outcome:
   2xx → the gate of the next step runs at once, and its first part records this delivery: breaker
   success, idempotency records, acknowledgement (a failed call leaves them on record for the next);
   408/429/5xx/timeout/connection error → breaker failure, and each alert is scheduled for a retry
   (full-jitter backoff, or Retry-After) and acknowledged in one atomic step, or dead-lettered once
   ``moog_max_retries`` is used up; 401/403 → MOOG_API_KEY is read again and the request sent once more
   with its other value (NEXT), which the process keeps using once Moogsoft takes it; refused again, it is
   an outage: breaker failure and retries that use up no attempt, so a key rotated on one side only never
   dead-letters an alert; other 4xx → dead-lettered at once with status and response.

So a steady stream costs one Redis call per request, whatever the batch size.

What holds: every alert reaches Moogsoft at least once, and an alert is never sent again once its
delivery is recorded (its idempotency record). What cannot hold is exactly once: a POST that Moogsoft
may have accepted cannot be taken back, and a forwarder killed between the POST and recording it leaves
those alerts pending. Another forwarder takes them over after ``forwarder_claim_idle_seconds`` (the
takeover delay) and, finding their in-flight record, sends them again marked ``resent`` (same event id)
and counts them in ``mutt_forwarder_alerts_resent_total{after="takeover"}``; a retry after a timeout is
marked and counted the same way (``after="timeout"``). The window is one request per lane.
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

import redis
from prometheus_client import Counter, Histogram

from configcenter.registry import get_definition
from configcenter.runtime import current_snapshot, get_setting
from core import contracts, streams
from core.redis import get_redis, key
from core.rotation import ordered_values, remember_accepted
from core.secrets import refresh_secrets
from delivery.breaker import CircuitBreaker
from delivery.destination import local_mock_url
from delivery.gate import GateResult, StepScripts
from delivery.payloads import PayloadError, SecretHeaders, auth_headers, build_request
from delivery.ratelimit import SharedRateLimit
from delivery.retry import RetrySchedule, backoff_delay
from delivery.status import COLLECTOR  # noqa: F401  (imported: this worker's /metrics exports the state)
from delivery.transport import Transport, TransportError

logger = logging.getLogger("mutt.forwarder")

DELIVERED_TTL = 86_400  # long enough to cover any redelivery after a crash
HEADERS_SECONDS = 1.0  # how long the request headers (with the credential) are reused
TRIM_INTERVAL = 1.0  # seconds between two trims of the alert stream (a safety net, see Forwarder._trim)
# Seconds between two sweeps of the in-flight record (a safety net: every outcome deletes its records).
INFLIGHT_SWEEP_INTERVAL = 60.0
RETRYABLE_STATUSES = frozenset({408, 429})
# Moogsoft refusing the credential is an outage of the destination (a key rotated on one side only), not a
# fault of the alerts: it opens the breaker and holds alerts like a 503, and uses up none of their retries.
AUTH_STATUSES = frozenset({401, 403})
MOOG_SECRET = "MOOG_API_KEY"  # noqa: S105 (the secret's name, not a value)

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
RESENT = Counter(
    "mutt_forwarder_alerts_resent_total",
    "Alerts sent again, marked resent, although an earlier POST of them may have reached Moogsoft: after "
    "a takeover of a forwarder that died mid-request, or after a timeout.",
    ["after"],
)
DEAD_LETTERED = Counter("mutt_forwarder_dead_lettered_total", "Alerts moved to the Moogsoft DLQ.", ["reason"])


_REQUEST_COUNTERS: dict[tuple[str, str], Any] = {}


def _requests_counter(outcome: str, reason: str) -> Any:
    """REQUESTS for these labels, looked up once (labels() takes a lock and checks names every call)."""
    counter = _REQUEST_COUNTERS.get((outcome, reason))
    if counter is None:
        counter = _REQUEST_COUNTERS.setdefault((outcome, reason), REQUESTS.labels(outcome, reason))
    return counter


def delivered_key(event_id: str) -> str:
    return key("delivered", event_id)


def inflight_key(destination: str = "moog") -> str:
    """The in-flight record: a hash whose fields are the stream entry ids of POSTs not yet confirmed."""
    return key("inflight", destination)


def moog_url(configured: str | None = None) -> str:
    """The configured Moogsoft URL, or the local mock_moog that `mutt up` runs when none is set."""
    return (get_setting("moog_url") if configured is None else configured) or f"{local_mock_url()}/events"


class StepSettings:
    """The runtime settings as of one snapshot, for one step.

    A step reads about ten settings, and each ``get_setting`` checks the snapshot's age through Django's
    lazy settings: on a one-alert step that adds up. Same values, same defaults: ``settings[key]`` is
    what ``get_setting(key)`` returned when the step began.
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values = current_snapshot().values

    def __getitem__(self, key: str) -> Any:
        return self._values.get(key, get_definition(key).default)


@dataclass(frozen=True)
class Result:
    """How one request ended: ``delivered``, ``retry`` or ``permanent``, with a reason code."""

    outcome: str
    reason: str
    status: int | None = None
    retry_after: float | None = None
    excerpt: str = ""
    # The destination failed, not the alerts (authentication refused): a retry that uses up no attempt.
    holds: bool = False


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


def classify(status: int | None, error: TransportError | None = None, headers: Any = None, body: bytes = b"") -> Result:
    """Any 2xx delivered; 408, 429, 5xx, timeouts and connection errors retryable; 401 and 403 retryable
    without using up an attempt (see AUTH_STATUSES); other 4xx permanent."""
    if error is not None:
        return Result("retry", error.reason, excerpt=str(error)[:500])
    status = status or 0
    if 200 <= status < 300:
        return Result("delivered", "ok", status)
    excerpt = body[:500].decode("utf-8", "replace")
    retry_after = parse_retry_after(headers.get("Retry-After") if headers is not None else None)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Result("retry", f"http_{status}", status, retry_after, excerpt)
    if status in AUTH_STATUSES:
        return Result("retry", f"http_{status}", status, retry_after, excerpt, holds=True)
    return Result("permanent", f"http_{status}", status, None, excerpt)


@dataclass
class _Held:
    """Alerts read and not yet sent: read ahead, or waiting for the rate limit or the breaker."""

    items: list[tuple[bytes, dict[str, Any]]]
    not_before: float = 0.0
    claimed_at: float = field(default_factory=time.monotonic)


class Forwarder:
    def __init__(self, consumer: str | None = None, *, client: redis.Redis | None = None) -> None:
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.client = client or get_redis()
        self.stream = streams.alerts_stream()
        self.dlq = streams.dlq_stream(contracts.MOOG_QUEUE)
        self.group = contracts.FORWARDERS_GROUP
        self.breaker = CircuitBreaker(self.client)
        self.rate_limit = SharedRateLimit(self.client)
        self.retries = RetrySchedule(self.client, self.stream, self.group)
        self.scripts = StepScripts(
            self.client,
            breaker_key=self.breaker.key,
            bucket_key=self.rate_limit.key,
            schedule_key=self.retries.key,
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            inflight_key=inflight_key(),
        )
        # One keep-alive connection is enough; it never retries on its own (retries are ours, scheduled,
        # and counted).
        self.http = Transport()
        self._held: _Held | None = None
        self._gate_ahead: GateResult | None = None
        self._unrecorded: list[tuple[bytes, dict[str, Any]]] = []  # delivered (2xx), not yet recorded
        self._delivered_prefix = delivered_key("")
        self._inflight = inflight_key()
        self.settings = StepSettings()  # renewed at the start of every step
        # (valid until, (format, content headers), headers, the credential value they carry)
        self._header_cache: tuple[float, tuple[str, dict[str, str]], SecretHeaders, str] | None = None
        self._last_claim = 0.0
        self._last_trim = 0.0
        self._last_sweep = time.monotonic()
        streams.ensure_group(self.client, self.stream, self.group)

    # --- the step -----------------------------------------------------------------------------

    def step(self, block_ms: int = 1000) -> int:
        """Deliver at most one request's worth of alerts; returns how many alerts were finished."""
        held = self._held
        if held is not None and time.monotonic() < held.not_before:
            return 0  # still waiting for the rate limit
        self.settings = StepSettings()
        # After a delivery the gate already ran, in the call that recorded it.
        gate, self._gate_ahead = self._gate_ahead, None
        gate = gate or self._gate()
        if gate.decision == "wait":
            self._keep_held_claimed()
            return 0
        limit = 1 if gate.decision == "probe" else self.settings["moog_batch_size"]
        wait = gate.wait
        checked = [item for item in held.items if item[0] not in gate.done] if held is not None else []
        new = self._accept(gate.entries)
        if checked:  # the gate checked their idempotency records; what it read waits for the next gate
            items, later = checked[:limit], checked[limit:] + new
        elif new:
            items, later = new[:limit], new[limit:]
            if wait == 0:  # about to be sent: check their idempotency records now
                items = self._drop_delivered(items)
        else:  # nothing in hand or in the stream when the gate looked: a takeover when due, or block
            items = self._read(limit, block_ms, claim=self._claim_due(consume=True))
            items, later = items[:limit], items[limit:]
            if items:
                wait = self.rate_limit.take(self.settings["moog_rate_limit"], self.settings["moog_rate_period"])
        self._held = _Held(later) if later else None
        if not items:
            return 0
        if wait > 0:
            self._held = _merge(_Held(items, time.monotonic() + wait), self._held)
            return 0
        return self._send(items, gate.in_flight)

    def _gate(self, *, read_ahead: bool = True) -> GateResult:
        """One script call: record the last 2xx, then due retries, breaker, idempotency of the alerts in
        hand, a read ahead (two batches in hand at most) and the rate limit."""
        held = self._held.items if self._held is not None else []
        settings = self.settings
        batch_size = settings["moog_batch_size"]
        # A takeover of a stalled forwarder's alerts needs an empty hand (see step); stop reading ahead.
        read = 0 if not read_ahead or self._claim_due(consume=False) else max(0, 2 * batch_size - len(held))
        gate = self.scripts.gate(
            timeout=settings["circuit_breaker_timeout"],
            limit=settings["moog_rate_limit"],
            period=settings["moog_rate_period"],
            now=time.time(),
            read=read,
            held=[(entry_id, self._delivered_key(alert.get("event_id", ""))) for entry_id, alert in held],
            delivered=[(entry_id, self._delivered_key(alert["event_id"])) for entry_id, alert in self._unrecorded],
            ttl=DELIVERED_TTL,
            batch=batch_size,
        )
        self._unrecorded = []
        if gate.recorded is not None:
            self.breaker.observe_record(*gate.recorded)
        self.breaker.observe_acquire(gate.decision, gate.state)
        self.rate_limit.observe(gate.wait)
        if gate.done:
            SKIPPED.inc(len(gate.done))
        return gate

    def _read(self, limit: int, block_ms: int, *, claim: bool) -> list[tuple[bytes, dict[str, Any]]]:
        """Alerts of a stalled forwarder (when ``claim``), else new ones (blocking), not yet delivered."""
        claimed = self._claim_abandoned(limit) if claim else []
        if claimed:
            return self._mark_resent(self._drop_delivered(self._accept(claimed)))
        return self._drop_delivered(self._accept(self._read_new(limit, block_ms)))

    def _mark_resent(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[tuple[bytes, dict[str, Any]]]:
        """Alerts taken over from a stalled forwarder: those whose entries are on the in-flight record were
        being POSTed when it stopped, and Moogsoft may have taken them. They are sent again (a POST cannot
        be taken back, and one that may have failed must not be lost), marked ``resent`` and counted, so
        Moogsoft and operators can tell the copy from a new alert.

        The records stay: this forwarder may be held (rate limit) or die before its own POST, and the next
        one to take them over must still find them. Its own record before its POST overwrites them, and
        every outcome (delivered, retry, DLQ, given back) deletes them."""
        if not items:
            return items
        records = self.client.hmget(self._inflight, [entry_id for entry_id, _ in items])
        marked = [
            (entry_id, {**alert, "resent": True} if record is not None else alert)
            for (entry_id, alert), record in zip(items, records, strict=True)
        ]
        resent = sum(1 for record in records if record is not None)
        if resent:
            RESENT.labels("takeover").inc(resent)
            logger.warning("alerts taken over mid-request are sent again, marked resent", extra={"count": resent})
        return marked

    def _accept(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[bytes, dict[str, Any]]]:
        """Decoded alerts; entries that are not alerts (poison) go to the DLQ."""
        fresh: list[tuple[bytes, dict[str, Any]]] = []
        poison: list[tuple[bytes, dict[str, Any], Result]] = []
        for entry_id, fields in entries:
            try:
                fresh.append((entry_id, streams.decode(fields, exact_if="details")))  # varbinds exact
            except ValueError as exc:
                raw = fields.get(contracts.PAYLOAD_FIELD, b"").decode("utf-8", "replace")
                poison.append((entry_id, {"raw": raw}, Result("permanent", "malformed", excerpt=str(exc))))
        self._dead_letter(poison)
        return fresh

    def _drop_delivered(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[tuple[bytes, dict[str, Any]]]:
        """The alerts without an idempotency record; those with one are acknowledged without sending."""
        if not items:
            return items
        pipe = self.client.pipeline(transaction=False)
        for _, alert in items:
            pipe.exists(delivered_key(alert.get("event_id", "")))
        already = pipe.execute()
        done = [entry_id for (entry_id, _), seen in zip(items, already, strict=True) if seen]
        if done:
            pipe = self.client.pipeline(transaction=True)
            streams.ack_and_delete(pipe, self.stream, self.group, done)
            pipe.hdel(self._inflight, *done)  # taken over after a delivery it had not recorded yet
            pipe.execute()
            SKIPPED.inc(len(done))
        return [item for item, seen in zip(items, already, strict=True) if not seen]

    def _read_new(self, limit: int, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        # redis-py types the reply as the union of every protocol's shape; ours is RESP2 with bytes.
        response: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=limit, block=block_ms
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = response[0][1] if response else []
        return entries

    def _claim_due(self, *, consume: bool) -> bool:
        """Whether it is time to look for a stalled forwarder's alerts (``consume``: and start the next wait)."""
        idle = self.settings["forwarder_claim_idle_seconds"]
        now = time.monotonic()
        if now - self._last_claim < min(idle / 2, 5.0):
            return False
        if consume:
            self._last_claim = now
        return True

    def _claim_abandoned(self, limit: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        idle_ms = int(self.settings["forwarder_claim_idle_seconds"] * 1000)
        return streams.claim_abandoned(
            self.client, self.stream, self.group, self.consumer, idle_ms=idle_ms, count=limit
        )

    def _keep_held_claimed(self) -> None:
        if self._held is not None:
            ids = [entry_id for entry_id, _ in self._held.items]
            streams.keep_claimed(self.client, self.stream, self.group, self.consumer, ids)

    def give_back_held(self) -> int:
        """Return the alerts in hand to the stream for any forwarder (on the way out); returns how many.

        In hand: those held (the gate that ran last may have found some delivered and acknowledged them
        already) and those that gate read ahead."""
        held, self._held = self._held, None
        ahead, self._gate_ahead = self._gate_ahead, None
        done = ahead.done if ahead is not None else frozenset()
        alerts = [(entry_id, alert) for entry_id, alert in held.items if entry_id not in done] if held else []
        if ahead is not None:
            alerts += self._accept(ahead.entries)
        return self.scripts.give_back([(entry_id, streams.dumps(alert)) for entry_id, alert in alerts])

    @property
    def holding(self) -> bool:
        """Whether alerts are in hand (read ahead, or waiting for the rate limit or the breaker)."""
        return self._held is not None or bool(self._gate_ahead is not None and self._gate_ahead.entries)

    def close(self) -> None:
        """On the way out: record deliveries not yet recorded, give the alerts in hand back, leave the
        group if nothing is pending, hang up."""
        try:
            self.give_back_held()
            if self._unrecorded:
                self._gate(read_ahead=False)  # nothing held, nothing read: only the recording matters
        except redis.RedisError:
            logger.warning("alerts in hand stay pending; another forwarder takes them over", exc_info=True)
        streams.forget_consumer_if_done(self.client, self.stream, self.group, self.consumer)
        self.http.close()
        self.scripts.close()

    def _delivered_key(self, event_id: str) -> str:
        return self._delivered_prefix + event_id

    # --- sending ------------------------------------------------------------------------------

    def _send(self, items: list[tuple[bytes, dict[str, Any]]], in_flight: frozenset[bytes] = frozenset()) -> int:
        """POST ``items`` once they are all recorded as in flight (the gate recorded ``in_flight``), then
        record the outcome: delivered, scheduled for a retry, or dead-lettered."""
        fmt, class_from = self.settings["moog_format"], self.settings["moog_class_from"]
        try:
            request = build_request([alert for _, alert in items], fmt, class_from=class_from)
        except PayloadError:
            items = self._drop_unmappable(items, fmt)
            if not items:
                return 0
            request = build_request([alert for _, alert in items], fmt, class_from=class_from)
        self._record_in_flight([item for item in items if item[0] not in in_flight])
        headers = self._headers(fmt, request.headers)
        result = self._post(request.body, headers)
        if result.status in AUTH_STATUSES:
            result = self._post_with_other_key(fmt, request.body, request.headers, result)
        if result.outcome == "delivered":
            self._mark_delivered(items)  # records the success with the breaker in the same call
        else:
            self.breaker.record(result.outcome != "retry", self.settings["circuit_breaker_threshold"])
            if result.outcome == "retry":
                self._schedule_retries(items, result)
            else:
                self._dead_letter([(entry_id, alert, result) for entry_id, alert in items])
        self._trim()
        return len(items)

    def _record_in_flight(self, items: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Record alerts the gate did not record as in flight (read and sent in one step: the first batch,
        a blocking read, a takeover): one more round trip, off the steady stream's path."""
        if items:
            self.client.hset(self._inflight, mapping=dict.fromkeys((entry_id for entry_id, _ in items), 1))

    def _post(self, body: bytes, headers: SecretHeaders) -> Result:
        """One POST to Moogsoft, timed and counted by outcome."""
        timeout = self.settings["moog_timeout"]
        started = time.perf_counter()
        try:
            response = self.http.post(
                moog_url(self.settings["moog_url"]),
                body,
                headers,
                timeout=timeout,
                connect_timeout=min(timeout, 5.0),
            )
            result = classify(response.status, headers=response.headers, body=response.body)
        except TransportError as exc:
            result = classify(None, exc)
        REQUEST_SECONDS.observe(time.perf_counter() - started)
        _requests_counter(result.outcome, result.reason).inc()
        return result

    def _post_with_other_key(self, fmt: str, body: bytes, content: dict[str, str], refused: Result) -> Result:
        """Moogsoft refused the credential (401/403): read MOOG_API_KEY again and send once more with its
        other value (NEXT during a rotation, or a value rotated in meanwhile). When Moogsoft takes it, this
        process uses that value from now on; when it refuses it too, or there is none, ``refused`` stands."""
        rejected = self._header_cache[3] if self._header_cache is not None else ""
        refresh_secrets(MOOG_SECRET)
        self._header_cache = None
        others = [value for value in ordered_values(MOOG_SECRET) if value != rejected]
        if not others:
            logger.warning(
                "Moogsoft refused the credential and MOOG_API_KEY has no other value; holding alerts",
                extra={"status": refused.status},
            )
            return refused
        headers = auth_headers(fmt, others[0])
        headers.update(content)
        result = self._post(body, headers)
        if result.status in AUTH_STATUSES:
            logger.warning(
                "Moogsoft refused both values of MOOG_API_KEY; holding alerts", extra={"status": result.status}
            )
        elif result.outcome == "delivered":
            remember_accepted(MOOG_SECRET, others[0])  # no value is logged, only that it changed
            logger.warning("Moogsoft refused one value of MOOG_API_KEY and accepted the other; using that one")
        return result

    def _trim(self) -> None:
        """Every path deletes what it acknowledges, so the stream's length is already the backlog the
        alerters shed on; trimming what every group acknowledged is a safety net, run once a second. So is
        the sweep of in-flight records of entries no longer pending, once a minute."""
        now = time.monotonic()
        if now - self._last_trim >= TRIM_INTERVAL:
            self._last_trim = now
            streams.trim_acknowledged(self.client, self.stream)
        if now - self._last_sweep >= INFLIGHT_SWEEP_INTERVAL:
            self._last_sweep = now
            self.scripts.sweep_in_flight()

    def _headers(self, fmt: str, content: dict[str, str]) -> SecretHeaders:
        """Authentication and content headers, the same mapping for up to a second: the credential is
        looked up (and its header built) once a second rather than for every request, and the transport
        encodes an unchanged mapping only once. The value Moogsoft accepted last in this process is used
        first (see _post_with_other_key); a rotated credential is in use within that second."""
        now = time.monotonic()
        cached = self._header_cache
        if cached is None or now >= cached[0] or cached[1] != (fmt, content):
            values = ordered_values(MOOG_SECRET)
            secret = values[0] if values else ""
            headers = auth_headers(fmt, secret)  # a masking mapping: its repr never shows the key
            headers.update(content)
            self._header_cache = cached = (now + HEADERS_SECONDS, (fmt, content), headers, secret)
        return cached[2]

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
        """Breaker success, idempotency records and acknowledgement, in the gate call of the next step.

        Until that call succeeds the alerts stay on record as unrecorded, so a Redis error here does not
        forget them: the next gate (or close) records them rather than letting them be sent again."""
        DELIVERED.inc(len(items))
        self._unrecorded = items
        self._gate_ahead = self._gate()

    def _schedule_retries(self, items: list[tuple[bytes, dict[str, Any]]], result: Result) -> None:
        max_retries = self.settings["moog_max_retries"]
        base, cap = self.settings["moog_retry_base_delay"], self.settings["moog_retry_max_delay"]
        now = time.time()
        scheduled: list[tuple[float, bytes, bytes]] = []
        exhausted: list[tuple[bytes, dict[str, Any], Result]] = []
        used = 0 if result.holds else 1  # Moogsoft refusing our credential is not the alerts' fault
        # A request that timed out may have been taken: its retry is a copy, marked as such.
        resent = {"resent": True} if result.reason == "timeout" else {}
        for entry_id, alert in items:
            attempts = int(alert.get("attempts", 0)) + used
            if attempts > max_retries:
                exhausted.append((entry_id, {**alert, "attempts": attempts}, _exhausted(result)))
                continue
            delay = result.retry_after if result.retry_after is not None else backoff_delay(max(attempts, 1), base, cap)
            member = streams.dumps({**alert, "attempts": attempts, "last_error": result.reason, **resent})
            scheduled.append((now + min(delay, cap), member, entry_id))
        # Answered (or timed out and now marked resent): no longer in flight, in the same call. The exhausted
        # ones leave the record in _dead_letter.
        self.retries.schedule_and_ack(scheduled, inflight_key=self._inflight)
        RETRIES.inc(len(scheduled))
        if resent and scheduled:
            RESENT.labels("timeout").inc(len(scheduled))
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
                    "e": streams.dumps(alert),
                },
            )
            DEAD_LETTERED.labels(result.reason).inc()
        ids = [entry_id for entry_id, _, _ in entries]
        streams.ack_and_delete(pipe, self.stream, self.group, ids)
        pipe.hdel(self._inflight, *ids)
        pipe.execute()
        logger.error("alerts moved to the Moogsoft DLQ", extra={"count": len(entries), "reason": entries[0][2].reason})

    def idle(self) -> bool:
        """Nothing held, nothing scheduled for retry, nothing unread or pending in the stream."""
        if self.holding or self.retries.depth():
            return False
        groups = {g["name"].decode(): g for g in self.client.xinfo_groups(self.stream)}
        pending = groups.get(self.group, {}).get("pending", 0)
        return pending == 0 and streams.backlog(self.client, self.stream) == 0


def _exhausted(result: Result) -> Result:
    return Result("permanent", "retries_exhausted", result.status, None, f"{result.reason}: {result.excerpt}"[:500])


def _merge(first: _Held, second: _Held | None) -> _Held:
    if second is None:
        return first
    return _Held(first.items + second.items, first.not_before)
