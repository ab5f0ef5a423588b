"""A circuit breaker shared by every forwarder, kept in Redis and changed atomically in Lua.

closed ──(threshold consecutive failures)──▶ open ──(timeout passed)──▶ half-open: exactly one probe
   ▲                                                                         │
   └────────────────────(probe succeeds)──────────────────────────────┘ (probe fails → open again)

While open, forwarders do not attempt deliveries, so no retry is used up against a Moogsoft that is
down. Time comes from Redis ``TIME`` so pods with skewed clocks agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from prometheus_client import Counter, Gauge

from mutt_project.redis import key

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

STATE = Gauge("mutt_forwarder_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["destination"])
TRANSITIONS = Counter(
    "mutt_forwarder_breaker_transitions_total", "Circuit breaker state changes.", ["destination", "to"]
)

# KEYS[1]: breaker hash. ARGV: timeout (s).
# Returns {decision, state}: decision "go" (closed), "probe" (this caller is the one half-open probe)
# or "wait" (open, or a probe is already out).
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {'go', state} end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
  if t - opened < tonumber(ARGV[1]) then return {'wait', state} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_at', tostring(t))
  return {'probe', 'half_open'}
end
-- half-open: one probe is out; if it never reported back (its forwarder died), allow another after timeout
local probe_at = tonumber(redis.call('HGET', KEYS[1], 'probe_at') or '0')
if t - probe_at >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'probe_at', tostring(t))
  return {'probe', state}
end
return {'wait', state}
"""

# KEYS[1]: breaker hash. ARGV: outcome ("success" | "failure"), threshold.
# Returns {old state, new state}.
_RECORD = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == 'success' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
  return {state, 'closed'}
end
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(t), 'failures', 0)
  return {state, 'open'}
end
if state == 'open' then return {state, state} end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(t), 'failures', 0)
  return {state, 'open'}
end
return {state, state}
"""


@dataclass(frozen=True)
class Snapshot:
    state: str
    failures: int
    opened_at: float | None


class CircuitBreaker:
    def __init__(self, client: redis.Redis, destination: str = "moog") -> None:
        self.client = client
        self.destination = destination
        self.key = key("breaker", destination)
        self._acquire = client.register_script(_ACQUIRE)
        self._record = client.register_script(_RECORD)

    def acquire(self, timeout: float) -> str:
        """ "go", "probe" (you are the one half-open attempt) or "wait" (do not attempt now)."""
        decision, state = self._acquire(keys=[self.key], args=[timeout])
        state = state.decode()
        STATE.labels(self.destination).set(STATE_CODES[state])
        if decision == b"probe" and state == HALF_OPEN:
            TRANSITIONS.labels(self.destination, HALF_OPEN).inc()
        return decision.decode()

    def record(self, success: bool, threshold: int) -> tuple[str, str]:
        """Report an attempt's outcome; returns (state before, state after)."""
        old, new = (s.decode() for s in self._record(keys=[self.key], args=["success" if success else "failure",
                                                                             threshold]))  # fmt: skip
        STATE.labels(self.destination).set(STATE_CODES[new])
        if old != new:
            TRANSITIONS.labels(self.destination, new).inc()
        return old, new

    def snapshot(self) -> Snapshot:
        raw = {k.decode(): v.decode() for k, v in self.client.hgetall(self.key).items()}
        opened = raw.get("opened_at")
        return Snapshot(raw.get("state", CLOSED), int(raw.get("failures", 0)), float(opened) if opened else None)

    def reset(self) -> None:
        self.client.delete(self.key)
