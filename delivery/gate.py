"""The forwarder's Redis work between two requests, in one script call.

A step used to make a round trip per concern (due retries, breaker, rate limit, read, idempotency,
breaker outcome, acknowledgement, trim): eight per request, most of a one-alert request's time. The
gate script does all of it atomically, in this order:

1. finish the request just delivered (when there is one): the breaker records the success, every alert
   gets its idempotency record, and the entries are acknowledged and deleted;
2. due retries go back into the alert stream;
3. the circuit breaker decides: go, the one half-open probe, or wait. While it says wait, nothing is
   checked, read or taken;
4. the alerts the forwarder holds are checked against their idempotency records; those already
   delivered are acknowledged and deleted on the spot;
5. up to the asked count of new entries is read (XREADGROUP without BLOCK: a script cannot block; the
   forwarder blocks outside when the stream is empty). They are the next request's alerts: the next
   gate checks them. Reading one batch ahead is what lets a steady stream cost one call per request;
6. when there is something to send, one token of the shared rate limit is taken;
7. when the token was granted, the held alerts about to be sent (up to the batch size, one for a probe)
   are recorded as in flight: their stream entry ids (one per attempt: a retry is a new entry) become
   fields of one hash, ``inflight:<destination>``. Recording the delivery in step 1 removes them again.
   A forwarder that takes over a stalled one's entries finds those whose POST may have reached Moogsoft
   unconfirmed, and marks their alerts as resent (delivery/forwarder.py). Done here, the record costs no
   extra round trip, and one hash (one HSET and one HDEL per request) costs Redis less than a key each.

The gate runs once per request, so its call is made on a connection the forwarder keeps (taken from the
client's pool, given back on close) rather than through redis-py's command path, whose pool checkout,
retry wrapper, observability hooks and reply callbacks cost about as much CPU as the call itself.

``give_back`` returns held alerts to the stream (new entries, the old ones acknowledged and deleted in
the same call), so a forwarder that stops leaves nothing pending for others to wait for.

The Lua functions come from breaker.py, ratelimit.py and retry.py, so each rule exists once, and every
key a script touches is passed in KEYS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from core.redis import DeferredScript
from delivery.breaker import ACQUIRE_LUA, CLOCK_LUA, RECORD_LUA
from delivery.ratelimit import TAKE_LUA
from delivery.retry import RELEASE_LUA

# Most retries released per gate; more wait for the next one.
RELEASE_LIMIT = 1000

Entry = tuple[bytes, dict[bytes, bytes]]

# KEYS: breaker hash, rate-limit bucket, retry schedule, alert stream, then the idempotency keys of the
# alerts just delivered, then those of the alerts held (n keys in all), then the in-flight hash. ARGV:
# breaker timeout, rate limit, rate
# period, now (epoch s, the clock of the retry schedule's scores), most retries to release, group,
# consumer, count to read (0: read nothing), idempotency record TTL (s), how many alerts were just
# delivered, then the entry ids in the order of their keys (ARGV[i + 6] is the entry of KEYS[i]), then
# the most held alerts the next request sends (the batch size).
# Returns {decision, breaker state, retries released, rate-limit wait ("0": granted or nothing to send),
# {held entry ids already delivered (now acknowledged and deleted)}, {entries read}, breaker state
# before and after recording the delivery ("" when there was none), {held entry ids recorded in flight}}.
_GATE = (
    CLOCK_LUA
    + RECORD_LUA
    + ACQUIRE_LUA
    + TAKE_LUA
    + RELEASE_LUA
    + """
local t = redis_now()
local stream, group, delivered = KEYS[4], ARGV[6], tonumber(ARGV[10])
local n = #KEYS - 5
local inflight = KEYS[#KEYS]
local before, after = '', ''
if delivered > 0 then
  before, after = breaker_record(KEYS[1], true, 0, t)
  for i = 5, 4 + delivered do
    redis.call('SET', KEYS[i], 1, 'EX', ARGV[9])
  end
  redis.call('HDEL', inflight, unpack(ARGV, 11, 10 + delivered))
  redis.call('XACK', stream, group, unpack(ARGV, 11, 10 + delivered))
  redis.call('XDEL', stream, unpack(ARGV, 11, 10 + delivered))
end
local released = release_due(KEYS[3], stream, ARGV[4], tonumber(ARGV[5]))
local decision, state = breaker_acquire(KEYS[1], tonumber(ARGV[1]), t)
if decision == 'wait' then return {decision, state, released, '0', {}, {}, before, after, {}} end
local done, sending, unsent = {}, 0, {}
for i = 5 + delivered, 4 + n do
  local id = ARGV[i + 6]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    done[#done + 1] = id
  else
    sending = sending + 1
    unsent[#unsent + 1] = i
  end
end
local count = tonumber(ARGV[8])
if decision == 'probe' then
  -- the probe is one alert: read one only when none is in hand
  if sending > 0 then count = 0 else count = math.min(count, 1) end
end
local entries = {}
if count > 0 then
  local reply = redis.call('XREADGROUP', 'GROUP', group, ARGV[7], 'COUNT', count, 'STREAMS', stream, '>')
  if reply then entries = reply[1][2] end
end
local wait = '0'
if sending + #entries > 0 then wait = bucket_take(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), 1, t) end
local marked = {}
if wait == '0' and sending > 0 then
  local batch = tonumber(ARGV[11 + n])
  if decision == 'probe' then batch = 1 end
  local fields = {}
  for j = 1, math.min(batch, #unsent) do
    local id = ARGV[unsent[j] + 6]
    marked[j] = id
    fields[2 * j - 1] = id
    fields[2 * j] = '1'
  end
  redis.call('HSET', inflight, unpack(fields))
end
return {decision, state, released, wait, done, entries, before, after, marked}
"""
)

# KEYS: alert stream, in-flight hash. ARGV: group, then pairs (entry id, payload). Each payload is added
# again as a new entry and the old entry acknowledged, deleted and taken off the in-flight record (a
# taken-over alert keeps its record until an outcome: the new entry's payload carries its resent marker).
# Returns how many.
_GIVE_BACK = """
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return (#ARGV - 1) / 2
"""

# KEYS: alert stream, in-flight hash. ARGV: group. Removes the in-flight records of entries no longer
# pending in the group (acknowledged by a path that left its record behind); returns how many. Every record
# of a pending entry stays, so a takeover still finds it.
_SWEEP_IN_FLIGHT = """
local gone = {}
for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if not ok or #pending == 0 then gone[#gone + 1] = id end
end
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 999, #gone)))
end
return #gone
"""


@dataclass(slots=True)
class GateResult:
    decision: str  # "go", "probe" or "wait"
    state: str  # the breaker's state
    released: int  # due retries put back into the stream
    wait: float  # seconds to wait for the rate limit; 0.0 when granted or when there was nothing to send
    done: frozenset[bytes]  # held entries already delivered: acknowledged and deleted by the gate
    entries: list[Entry]  # entries read by the gate (their idempotency records are not checked yet)
    recorded: tuple[str, str] | None  # breaker state before and after recording a delivery, if any
    in_flight: frozenset[bytes] = frozenset()  # held entries recorded as in flight (about to be sent)


class StepScripts:
    """The gate and give-back scripts bound to one forwarder's keys, group and consumer name.

    One thread uses an instance at a time (each forwarder lane has its own)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        breaker_key: str,
        bucket_key: str,
        schedule_key: str,
        stream: str,
        group: str,
        consumer: str,
        inflight_key: str,
    ) -> None:
        self.breaker_key = breaker_key
        self.inflight_key = inflight_key
        self.bucket_key = bucket_key
        self.schedule_key = schedule_key
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._gate = DeferredScript(client, _GATE)  # on a connection kept for it
        self._give_back = client.register_script(_GIVE_BACK)
        self._sweep = client.register_script(_SWEEP_IN_FLIGHT)

    def gate(
        self,
        *,
        timeout: float,
        limit: int,
        period: float,
        now: float,
        read: int,
        held: Sequence[tuple[bytes, str]] = (),
        delivered: Sequence[tuple[bytes, str]] = (),
        ttl: int = 0,
        batch: int = 1,
    ) -> GateResult:
        """Finish ``delivered`` (2xx), then ask for the next request. ``held`` and ``delivered`` are
        (entry id, idempotency key) pairs; ``ttl`` is the idempotency records' lifetime in seconds;
        ``batch`` the most held alerts the next request sends (recorded in flight when it may go)."""
        pairs = [*delivered, *held]
        keys = [self.breaker_key, self.bucket_key, self.schedule_key, self.stream, *(k for _, k in pairs)]
        keys.append(self.inflight_key)
        args = [timeout, limit, period, now, RELEASE_LIMIT, self.group, self.consumer, read, ttl, len(delivered)]
        args += [entry_id for entry_id, _ in pairs]
        args.append(batch)
        decision, state, released, wait, done, entries, before, after, marked = self._gate.run(keys, args)
        return GateResult(
            decision=decision.decode(),
            state=state.decode(),
            released=int(released),
            wait=float(wait),
            done=frozenset(done),
            entries=[(entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in entries],
            recorded=(before.decode(), after.decode()) if delivered else None,
            in_flight=frozenset(marked),
        )

    def give_back(self, held: Sequence[tuple[bytes, bytes]]) -> int:
        """Put (entry id, payload) back into the stream as new entries; the old ones are acknowledged."""
        if not held:
            return 0
        args: list[Any] = [self.group]
        for entry_id, payload in held:
            args += [entry_id, payload]
        return int(self._give_back(keys=[self.stream, self.inflight_key], args=args))

    def sweep_in_flight(self) -> int:
        """Remove in-flight records of entries no longer pending in the group; returns how many."""
        return int(self._sweep(keys=[self.stream, self.inflight_key], args=[self.group]))

    def close(self) -> None:
        """Give the kept connection back to the client's pool."""
        self._gate.close()
