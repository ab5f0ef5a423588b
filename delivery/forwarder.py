"""The forwarder: a stream → its destination, at least once, every copy identifiable, whatever it does.

Nothing here is specific to one destination: its stream and group, the keys of its state, its settings,
URL, credential and request bodies come from delivery/destinations/ (ADR-013). The settings named below
are those of Moogsoft, the default destination.

``Forwarder.step()`` does one unit of work; ``run_forwarder`` loops over it, in as many lanes as
``forwarder_concurrency`` asks (delivery/lanes.py). Per step:

1. one Redis script, the gate (delivery/gate.py): due retries go back into the destination's stream
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
   ``moog_max_retries`` is used up; 401/403 → sent once more with the credential's other value
   (delivery/credentials.py); refused again, an outage: breaker failure and retries that use up no
   attempt; other 4xx → dead-lettered at once with status and response (delivery/outcomes.py decides).

So a steady stream costs one Redis call per request, whatever the batch size.

What holds: every alert reaches the destination at least once, and an alert is never sent again once its
delivery is recorded (its idempotency record). What cannot hold is exactly once: a POST that the destination
may have accepted cannot be taken back, and a forwarder killed between the POST and recording it leaves
those alerts pending. Another forwarder takes them over (delivery/takeover.py) and sends them again
marked ``resent`` (same event id), counted in ``mutt_forwarder_alerts_resent_total{after="takeover"}``; a
retry after a timeout is marked and counted the same way (``after="timeout"``). The window is one request
per lane.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from configcenter.runtime import settings_view
from core import streams
from core.contracts import MALFORMED, PAYLOAD_FIELD
from core.redis import get_redis
from delivery.breaker import CircuitBreaker
from delivery.credentials import CredentialHeaders
from delivery.destinations import DEFAULT, Destination, PayloadError, get_destination
from delivery.gate import GateResult, StepScripts
from delivery.metrics import ForwarderMetrics
from delivery.outcomes import AUTH_STATUSES, Item, Result, classify, dead_letter_fields, plan_retries, split_mappable
from delivery.ratelimit import SharedRateLimit
from delivery.retry import RetrySchedule
from delivery.status import COLLECTOR  # noqa: F401  (imported: this worker's /metrics exports the state)
from delivery.takeover import Takeover
from delivery.transport import Transport, TransportError

logger = logging.getLogger("mutt.forwarder")

DELIVERED_TTL = 86_400  # long enough to cover any redelivery after a crash
TRIM_INTERVAL = 1.0  # seconds between two trims of the stream (a safety net, see Forwarder._trim)
# Seconds between two sweeps of the in-flight record (a safety net: every outcome deletes its records).
INFLIGHT_SWEEP_INTERVAL = 60.0


@dataclass
class _Held:
    """Alerts read and not yet sent: read ahead, or waiting for the rate limit or the breaker."""

    items: list[Item]
    not_before: float = 0.0


class Forwarder:
    """One consumer of a destination's stream (by default Moogsoft's: ``destination`` names another, or is one)."""

    def __init__(
        self, consumer: str | None = None, *, client: redis.Redis | None = None,
        destination: Destination | str = DEFAULT,
    ) -> None:  # fmt: skip
        self.destination = target = get_destination(destination) if isinstance(destination, str) else destination
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.client = client or get_redis()
        self.stream = target.stream()
        self.dlq = target.dlq_stream()
        self.group = target.group
        self.keys = target.setting_keys
        self.breaker = CircuitBreaker(self.client, target.name)
        self.rate_limit = SharedRateLimit(self.client, target.name)
        self.retries = RetrySchedule(self.client, self.stream, self.group, target.name)
        self._inflight = target.inflight_key()
        self.scripts = StepScripts(
            self.client, breaker_key=self.breaker.key, bucket_key=self.rate_limit.key, schedule_key=self.retries.key,
            stream=self.stream, group=self.group, consumer=self.consumer, inflight_key=self._inflight,
        )  # fmt: skip
        # The destination's per-request calls, bound once: a request looks none of them up.
        self._build = target.build
        self._url = target.url
        self.credentials = CredentialHeaders(target)
        self.metrics = ForwarderMetrics(target.name)
        self.takeover = Takeover(
            self.client, stream=self.stream, group=self.group, consumer=self.consumer, inflight_key=self._inflight,
            resent=self.metrics.resent_after_takeover,
        )  # fmt: skip
        # One keep-alive connection is enough; it never retries on its own (retries are ours, scheduled,
        # and counted).
        self.http = Transport()
        self._held: _Held | None = None
        self._gate_ahead: GateResult | None = None
        self._unrecorded: list[Item] = []  # delivered (2xx), not yet recorded
        self._delivered_prefix = target.delivered_prefix()
        self.settings = settings_view()  # renewed at the start of every step
        self._last_trim = 0.0
        self._last_sweep = time.monotonic()
        streams.ensure_group(self.client, self.stream, self.group)

    # --- the step -----------------------------------------------------------------------------

    def step(self, block_ms: int = 1000) -> int:
        """Deliver at most one request's worth of alerts; returns how many alerts were finished."""
        held = self._held
        if held is not None and time.monotonic() < held.not_before:
            return 0  # still waiting for the rate limit
        self.settings = settings = settings_view()
        # After a delivery the gate already ran, in the call that recorded it.
        gate, self._gate_ahead = self._gate_ahead, None
        gate = gate or self._gate()
        if gate.decision == "wait":
            self._keep_held_claimed()
            return 0
        limit = 1 if gate.decision == "probe" else settings[self.keys.batch_size]
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
            items = self._read(limit, block_ms, claim=self._takeover_due(consume=True))
            items, later = items[:limit], items[limit:]
            if items:
                wait = self.rate_limit.take(settings[self.keys.rate_limit], settings[self.keys.rate_period])
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
        settings, keys, prefix = self.settings, self.keys, self._delivered_prefix
        batch_size = settings[keys.batch_size]
        # A takeover of a stalled forwarder's alerts needs an empty hand (see step); stop reading ahead.
        read = 0 if not read_ahead or self._takeover_due(consume=False) else max(0, 2 * batch_size - len(held))
        gate = self.scripts.gate(
            timeout=settings[keys.breaker_timeout],
            limit=settings[keys.rate_limit],
            period=settings[keys.rate_period],
            now=time.time(),
            read=read,
            held=[(entry_id, prefix + alert.get("event_id", "")) for entry_id, alert in held],
            delivered=[(entry_id, prefix + alert["event_id"]) for entry_id, alert in self._unrecorded],
            ttl=DELIVERED_TTL,
            batch=batch_size,
        )
        self._unrecorded = []
        if gate.recorded is not None:
            self.breaker.observe_record(*gate.recorded)
        self.breaker.observe_acquire(gate.decision, gate.state)
        self.rate_limit.observe(gate.wait)
        if gate.done:
            self.metrics.skipped.inc(len(gate.done))
        return gate

    def _read(self, limit: int, block_ms: int, *, claim: bool) -> list[Item]:
        """Alerts of a stalled forwarder (when ``claim``), else new ones (blocking), not yet delivered."""
        claimed = self.takeover.claim(limit, self.settings["forwarder_claim_idle_seconds"]) if claim else []
        if claimed:
            return self.takeover.mark_resent(self._drop_delivered(self._accept(claimed)))
        return self._drop_delivered(self._accept(self._read_new(limit, block_ms)))

    def _accept(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Item]:
        """Decoded alerts; entries that are not alerts (poison) go to the DLQ."""
        fresh: list[Item] = []
        poison: list[tuple[bytes, dict[str, Any], Result]] = []
        for entry_id, fields in entries:
            try:
                fresh.append((entry_id, streams.decode(fields, exact_if="details")))  # varbinds exact
            except ValueError as exc:
                raw = fields.get(PAYLOAD_FIELD, b"").decode("utf-8", "replace")
                poison.append((entry_id, {"raw": raw}, Result("permanent", MALFORMED, excerpt=str(exc))))
        self._dead_letter(poison)
        return fresh

    def _drop_delivered(self, items: list[Item]) -> list[Item]:
        """The alerts without an idempotency record; those with one are acknowledged without sending."""
        if not items:
            return items
        pipe = self.client.pipeline(transaction=False)
        prefix = self._delivered_prefix
        for _, alert in items:
            pipe.exists(prefix + alert.get("event_id", ""))
        already = pipe.execute()
        done = [entry_id for (entry_id, _), seen in zip(items, already, strict=True) if seen]
        if done:
            pipe = self.client.pipeline(transaction=True)
            streams.ack_and_delete(pipe, self.stream, self.group, done)
            pipe.hdel(self._inflight, *done)  # taken over after a delivery it had not recorded yet
            pipe.execute()
            self.metrics.skipped.inc(len(done))
        return [item for item, seen in zip(items, already, strict=True) if not seen]

    def _read_new(self, limit: int, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        # redis-py types the reply as the union of every protocol's shape; ours is RESP2 with bytes.
        response: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=limit, block=block_ms
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = response[0][1] if response else []
        return entries

    def _takeover_due(self, *, consume: bool) -> bool:
        return self.takeover.due(self.settings["forwarder_claim_idle_seconds"], consume=consume)

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

    # --- sending ------------------------------------------------------------------------------

    def _send(self, items: list[Item], in_flight: frozenset[bytes] = frozenset()) -> int:
        """POST ``items`` once they are all recorded as in flight (the gate recorded ``in_flight``), then
        record the outcome: delivered, scheduled for a retry, or dead-lettered."""
        settings = self.settings
        try:
            request = self._build([alert for _, alert in items], settings)
        except PayloadError:  # map them one by one: the alerts that cannot be mapped are dead-lettered
            items, unmappable = split_mappable(items, self._build, settings)
            self._dead_letter(unmappable)
            if not items:
                return 0
            request = self._build([alert for _, alert in items], settings)
        self._record_in_flight([item for item in items if item[0] not in in_flight])
        result = self._post(request.body, self.credentials.headers(request))
        if result.status in AUTH_STATUSES:
            result = self.credentials.send_with_other_value(request, result, self._post)
        if result.outcome == "delivered":
            self._mark_delivered(items)  # records the success with the breaker in the same call
        else:
            self.breaker.record(result.outcome != "retry", settings[self.keys.breaker_threshold])
            if result.outcome == "retry":
                self._schedule_retries(items, result)
            else:
                self._dead_letter([(entry_id, alert, result) for entry_id, alert in items])
        self._trim()
        return len(items)

    def _record_in_flight(self, items: list[Item]) -> None:
        """Record alerts the gate did not record as in flight (read and sent in one step: the first batch,
        a blocking read, a takeover): one more round trip, off the steady stream's path."""
        if items:
            self.client.hset(self._inflight, mapping=dict.fromkeys((entry_id for entry_id, _ in items), 1))

    def _post(self, body: bytes, headers: dict[str, str]) -> Result:
        """One POST to the destination, timed and counted by outcome."""
        settings = self.settings
        timeout = settings[self.keys.timeout]
        url = self._url(settings)
        started = time.perf_counter()
        try:
            response = self.http.post(url, body, headers, timeout=timeout, connect_timeout=min(timeout, 5.0))
            result = classify(response.status, headers=response.headers, body=response.body)
        except TransportError as exc:
            result = classify(None, exc)
        self.metrics.request_seconds.observe(time.perf_counter() - started)
        self.metrics.requests(result.outcome, result.reason).inc()
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

    def _mark_delivered(self, items: list[Item]) -> None:
        """Breaker success, idempotency records and acknowledgement, in the gate call of the next step.

        Until that call succeeds the alerts stay on record as unrecorded, so a Redis error here does not
        forget them: the next gate (or close) records them rather than letting them be sent again."""
        self.metrics.delivered.inc(len(items))
        self._unrecorded = items
        self._gate_ahead = self._gate()

    def _schedule_retries(self, items: list[Item], result: Result) -> None:
        settings, keys = self.settings, self.keys
        scheduled, exhausted = plan_retries(
            items, result, max_retries=settings[keys.max_retries], base=settings[keys.retry_base_delay],
            cap=settings[keys.retry_max_delay], now=time.time(),
        )  # fmt: skip
        # Answered (or timed out and now marked resent): no longer in flight, in the same call. The exhausted
        # ones leave the record in _dead_letter.
        self.retries.schedule_and_ack(scheduled, inflight_key=self._inflight)
        self.metrics.retries.inc(len(scheduled))
        if result.reason == "timeout" and scheduled:
            self.metrics.resent_after_timeout.inc(len(scheduled))
        if exhausted:
            self._dead_letter(exhausted)
        logger.warning(
            "%s delivery failed; retrying later", self.destination.title,
            extra={"reason": result.reason, "scheduled": len(scheduled), "exhausted": len(exhausted)},
        )  # fmt: skip

    def _dead_letter(self, entries: list[tuple[bytes, dict[str, Any], Result]]) -> None:
        """Move alerts to the destination's DLQ with status, response excerpt, attempts and reason; acknowledge."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        for entry_id, alert, result in entries:
            pipe.xadd(self.dlq, dead_letter_fields(entry_id, alert, result))
            self.metrics.dead_lettered(result.reason).inc()
        ids = [entry_id for entry_id, _, _ in entries]
        streams.ack_and_delete(pipe, self.stream, self.group, ids)
        pipe.hdel(self._inflight, *ids)
        pipe.execute()
        logger.error(
            "alerts moved to the %s DLQ", self.destination.title,
            extra={"count": len(entries), "reason": entries[0][2].reason},
        )  # fmt: skip

    def idle(self) -> bool:
        """Nothing held, nothing scheduled for retry, nothing unread or pending in the stream."""
        if self.holding or self.retries.depth():
            return False
        groups = {g["name"].decode(): g for g in self.client.xinfo_groups(self.stream)}
        pending = groups.get(self.group, {}).get("pending", 0)
        return pending == 0 and streams.backlog(self.client, self.stream) == 0


def _merge(first: _Held, second: _Held | None) -> _Held:
    if second is None:
        return first
    return _Held(first.items + second.items, first.not_before)
