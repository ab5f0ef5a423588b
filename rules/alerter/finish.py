"""The finisher: a batch's Redis work once its audit rows are committed.

Dead-letter its poison, then one Lua call per dedup bucket adds its alerts to every destination's stream
(skipping event ids already alerted) and acknowledges its entries, so neither a crash nor a takeover can
duplicate an alert; one more counts its unmatched events per host and template for the flood detector, and
the floods it finds are raised as meta-alerts. Acknowledged entries are trimmed and queue depths reported now and then.

``send_finish`` sends the scripts and ``collect`` reads their replies, so a pipelined alerter lets
Redis run them while it evaluates the next batch. A Redis error here is logged and counted, never
raised: the entries stay pending and are redone after the claim timeout (no audit row and no alert
more; the flood counter may count the redone batch's unmatched events twice).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis

from configcenter.runtime import get_setting
from core import outage, streams
from core.contracts import ALERTERS_GROUP, FORWARDERS_GROUP, AlerterDeadLetter
from core.redis import DeferredScript, key
from rules import flood, metrics
from rules.alerter.evaluate import Entry, Evaluated, Poison
from rules.listener import LiveRules

logger = logging.getLogger("mutt.alerter")

# Add each alert to the stream of every destination (settings.MUTT_DESTINATIONS) unless its event id was
# alerted before (a redelivery or a takeover), then acknowledge and delete the batch's entries: one atomic
# step, so an event is alerted once, to all of them. KEYS: the d destination streams, the ingest stream, the
# dedup hash. ARGV: d, alerters group, dedup ttl, n alerts, forwarders group, n (event id, payload) pairs,
# then the entry ids to acknowledge (in chunks: Lua's unpack stops near 8,000 values). With one destination
# it runs exactly the commands it ran before the fan-out; each more costs an EXISTS per call and an XADD per
# alert, inside the same call.
_PUBLISH_AND_ACK = """
local d = tonumber(ARGV[1])
local n = tonumber(ARGV[4])
local ingest, dedup = KEYS[d + 1], KEYS[d + 2]
if n > 0 then
  for s = 1, d do
    if redis.call('EXISTS', KEYS[s]) == 0 then
      -- Redis lost a destination's stream: recreate it with the forwarders' group so nothing added is skipped
      redis.call('XGROUP', 'CREATE', KEYS[s], ARGV[5], '0', 'MKSTREAM')
    end
  end
end
local added = 0
for i = 0, n - 1 do
  -- mark the event id only once its alert is added everywhere: a script that fails halfway (an XADD
  -- refused) leaves no mark behind that would skip the alert when the batch is redone (a destination
  -- that got it then gets it twice, which its forwarder's idempotency records absorb)
  local event_id = ARGV[6 + i * 2]
  if redis.call('HEXISTS', dedup, event_id) == 0 then
    for s = 1, d do
      redis.call('XADD', KEYS[s], '*', 'e', ARGV[7 + i * 2])
    end
    redis.call('HSET', dedup, event_id, '1')
    added = added + 1
  end
end
if n > 0 then redis.call('EXPIRE', dedup, tonumber(ARGV[3])) end
for i = 6 + n * 2, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  redis.call('XACK', ingest, ARGV[2], unpack(ARGV, i, last))
  redis.call('XDEL', ingest, unpack(ARGV, i, last))
end
return added
"""
TRIM_INTERVAL_SECONDS = 1.0
# Redelivery after a crash or takeover happens within the claim timeout; hours of margin are plenty.
DEDUP_TTL_SECONDS = 6 * 3600


def dedup_key(received_at: str) -> str:
    """Alert dedup hash of one hour of receive time: a redelivered event falls in the same bucket."""
    return key("alerted", received_at[:13])


@dataclass
class Outcome:
    """What one batch did (for the metrics)."""

    entries: int = 0
    audited: int = 0
    alerts: int = 0
    unmatched: int = 0
    dead_lettered: int = 0
    floods: int = 0


@dataclass
class Settled:
    """A batch whose audit rows are committed; what is left is Redis work (see ``Finisher.send_finish``)."""

    outcome: Outcome
    alerts: list[tuple[str, str, bytes]]  # (dedup bucket, event id, alert payload)
    ack_ids: list[bytes]
    poison: list[Poison]
    unmatched: list[tuple[str, str, str]]  # (hostname, template, message) of events no rule explains
    started: float  # when the batch's work began (perf_counter)


@dataclass
class Finishing:
    """A settled batch whose finishing scripts are sent; ``Finisher.collect`` reads their replies."""

    settled: Settled
    alerts: int = 0  # added by calls already answered
    counting: flood.Counting | None = None
    failed: Exception | None = None


class Finisher:
    def __init__(
        self, client: redis.Redis, *, consumer: str, stream: str, alerts: list[str], dlq: str, rules: LiveRules
    ) -> None:
        """``alerts``: the streams of the destinations every alert goes to (one or more)."""
        self.client = client
        self.consumer = consumer
        self.stream = stream
        self.alerts = alerts
        self.dlq = dlq
        self._rules = rules  # a flood's meta-alert goes to the host's team in the current snapshot
        self._publish = client.register_script(_PUBLISH_AND_ACK)
        # The two scripts that finish a batch, each on a connection of its own so their replies can be
        # read after other work (the main client's pool is used meanwhile).
        self._publish_later = DeferredScript(client, _PUBLISH_AND_ACK)
        self._count_later = DeferredScript(client, flood.RECORD_SCRIPT)
        self._trimmed_at = 0.0

    def close(self) -> None:
        """Give the connections of the finishing scripts back to the pool."""
        self._publish_later.close()
        self._count_later.close()

    def settle(
        self, entries: list[Entry], rows: Evaluated, evaluated: list[Any], refused: list[Poison], started: float
    ) -> Settled:
        """An audited batch's Redis work: its alerts, flood counts, poison and acknowledgements."""
        poison = rows.poison + refused
        buckets: dict[str, str] = {}  # received hour -> dedup hash (a batch rarely spans two hours)
        alerts = []
        unmatched = []
        for item, _, alert, template in evaluated:
            event = item.event
            if alert is not None:
                received = event["received_at"]
                bucket = buckets.get(received[:13]) or buckets.setdefault(received[:13], dedup_key(received))
                alerts.append((bucket, event["event_id"], alert))
            elif template is not None:
                unmatched.append((event["hostname"], template, event.get("message") or ""))
        # Every entry is acknowledged: audited, or dead-lettered before the acknowledgement is sent.
        ack_ids = [entry_id for entry_id, _ in entries]
        outcome = Outcome(entries=len(entries), audited=len(evaluated), dead_lettered=len(poison))
        return Settled(outcome, alerts, ack_ids, poison, unmatched, started)

    def send_finish(self, settled: Settled) -> Finishing:
        """The Redis half, sent: dead-letter the poison, then send the script that adds the alerts and
        acknowledges the batch, and the flood-counting script; ``collect`` reads what they did.

        A Redis error up to the acknowledgement is logged and counted, not raised: the batch's entries
        stay pending, and whoever takes them over after the claim timeout redoes them. That changes no
        audit row and no alert; the flood counter may count the redone batch's unmatched events a second
        time (the counting script is sent with, not after, the acknowledgement). The counts are sent only
        once the acknowledgement is; if they cannot be, that is logged alone and the batch still finishes.
        """
        finishing = Finishing(settled)
        for later in (self._publish_later, self._count_later):
            if later.in_flight:  # never expected: a reply left unread would desynchronise the connection
                logger.error("a finishing script's reply was never read; dropping its connection")
                later.close()
        try:
            self.dead_letter(settled.poison)
            calls = self._publish_calls(settled.alerts, settled.ack_ids)
            for keys, args in calls[:-1]:  # another hour's alerts: rare (a batch across an hour's turn)
                finishing.alerts += int(self._publish(keys=keys, args=args))
            if calls:
                self._publish_later.send(*calls[-1])
        except redis.RedisError as exc:
            finishing.failed = exc
            return finishing
        try:
            finishing.counting = flood.Counting.of(
                settled.unmatched,
                threshold=get_setting("unhandled_threshold"),
                window_seconds=int(get_setting("unhandled_window_seconds")),
            )
            if finishing.counting is not None:
                self._count_later.send(finishing.counting.keys, finishing.counting.args)
        except redis.RedisError as exc:
            finishing.counting = None
            logger.error("could not count %d unmatched events for flood detection (%s)", len(settled.unmatched), exc)
        return finishing

    def collect(self, finishing: Finishing) -> Outcome:
        """Read what the finishing scripts did, raise the floods they found, record the batch. Never
        raises: whatever fails here leaves the entries pending (see ``send_finish``)."""
        outcome = finishing.settled.outcome
        outcome.unmatched = len(finishing.settled.unmatched)
        failure = finishing.failed
        try:
            if self._publish_later.in_flight:
                finishing.alerts += int(self._publish_later.result())
        except Exception as exc:
            failure = failure or exc
        floods: list[flood.Flood] = []
        try:
            if self._count_later.in_flight and finishing.counting is not None:
                floods = finishing.counting.floods(self._count_later.result())
        except Exception as exc:
            logger.error("could not count %d unmatched events for flood detection (%s)", outcome.unmatched, exc)
        outcome.alerts = finishing.alerts
        if failure is not None:
            metrics.FINISH_FAILURES.inc()
            logger.error(
                "could not alert and acknowledge %d audited entries (%s); they stay pending and are redone "
                "after the claim timeout",
                len(finishing.settled.ack_ids),
                failure,
            )
            return outcome
        try:
            outcome.floods = self._raise_floods(floods)
        except Exception as exc:
            logger.error("could not raise %d flood meta-alerts (%s); later batches propose them", len(floods), exc)
        self._trim()
        metrics.EVENTS.labels("audited").inc(outcome.audited)
        metrics.EVENTS.labels("alerted").inc(outcome.alerts)
        metrics.EVENTS.labels("unmatched").inc(outcome.unmatched)
        metrics.EVENTS.labels("dead_lettered").inc(outcome.dead_lettered)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - finishing.settled.started)
        return outcome

    def publish_and_ack(self, alerts: list[tuple[str, str, bytes]], ack_ids: list[bytes]) -> int:
        """Add alerts not added before and acknowledge entries, atomically per dedup bucket."""
        return sum(int(self._publish(keys=keys, args=args)) for keys, args in self._publish_calls(alerts, ack_ids))

    def _publish_calls(
        self, alerts: list[tuple[str, str, bytes]], ack_ids: list[bytes]
    ) -> list[tuple[list[Any], list[Any]]]:
        """The publish script's (keys, args) per dedup bucket (the events of a batch almost always share
        the hour); the acknowledgements ride with the last call, so they happen only once every alert is
        added."""
        if not alerts and not ack_ids:
            return []
        buckets: dict[str, list[tuple[str, bytes]]] = {}
        for bucket, event_id, payload in alerts:
            buckets.setdefault(bucket, []).append((event_id, payload))
        if not buckets:
            buckets[dedup_key(datetime.now(UTC).isoformat())] = []
        calls = []
        for index, (bucket, items) in enumerate(buckets.items()):
            args: list[Any] = [len(self.alerts), ALERTERS_GROUP, DEDUP_TTL_SECONDS, len(items), FORWARDERS_GROUP]
            for event_id, payload in items:
                args += [event_id, payload]
            if index == len(buckets) - 1:
                args += ack_ids
            calls.append(([*self.alerts, self.stream, bucket], args))
        return calls

    def dead_letter(self, poison: list[Poison]) -> None:
        """Record each entry in the alerter DLQ with reason, error and the original payload."""
        if not poison:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry_id, raw, reason, error in poison:
            record: AlerterDeadLetter = {
                "reason": reason,
                "error": error[:1000],
                "attempts": 1,
                "source_id": entry_id,
                "failed_at": datetime.now(UTC).isoformat(),
                "consumer": self.consumer,
                "e": raw,
            }
            pipe.xadd(self.dlq, cast("dict[Any, Any]", record))  # redis-py's xadd type takes no TypedDict
        pipe.execute()
        logger.warning("moved %d entries to the alerter DLQ", len(poison), extra={"reasons": [p[2] for p in poison]})

    def _raise_floods(self, floods: list[flood.Flood]) -> int:
        now = datetime.now(UTC).isoformat()
        raised = 0
        for detected in floods:
            team = self._rules.ruleset.team_of(detected.hostname) or get_setting("unhandled_default_team")
            alert = flood.meta_alert(detected, team=team, received_at=now)
            bucket = flood.dedup_bucket(detected.window_start)
            if self.publish_and_ack([(bucket, alert["event_id"], orjson.dumps(alert))], []):
                raised += 1
                logger.warning("unmatched-event flood", extra={"host": detected.hostname, "count": detected.count})
        metrics.FLOODS.inc(raised)
        return raised

    def _trim(self) -> None:
        """Drop acknowledged entries (so XLEN is the backlog) and report queue depths, at most once a second.

        The publish script already deletes what it acknowledges; this is the safety net for entries
        acknowledged elsewhere, so it need not cost a round trip per batch.
        """
        now = time.monotonic()
        if now - self._trimmed_at < TRIM_INTERVAL_SECONDS:
            return
        self._trimmed_at = now
        try:
            streams.trim_acknowledged(self.client, self.stream)
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.stream)
            pipe.xlen(self.dlq)
            lag, dlq_depth = pipe.execute()
        except redis.RedisError as exc:
            outage.warn_or_report(exc, logger, "could not trim the ingest stream (%s)")
            return
        outage.REDIS.recovered()
        metrics.INGEST_LAG.set(lag)
        metrics.DLQ_DEPTH.set(dlq_depth)
