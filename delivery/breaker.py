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
from prometheus_client import Counter

from core.redis import key

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

# The state's gauge, mutt_forwarder_breaker_state, is read from Redis at scrape time (delivery/status.py):
# a gauge set here would show only what one process last saw, and zero in a process that never forwards.
TRANSITIONS = Counter(
    "mutt_forwarder_breaker_transitions_total", "Circuit breaker state changes.", ["destination", "to"]
)

# Redis TIME as seconds with a fraction: one clock for every pod, whatever their own clocks say.
CLOCK_LUA = """
local function redis_now()
  local now = redis.call('TIME')
  return tonumber(now[1]) + tonumber(now[2]) / 1000000
end
"""

# breaker_acquire(breaker hash, timeout s, now) -> decision, state: decision "go" (closed), "probe" (this
# caller is the one half-open probe) or "wait" (open, or a probe is already out). A Lua function so that
# the forwarder's gate script (delivery/gate.py) runs exactly this logic inside its one round trip.
ACQUIRE_LUA = """
local function breaker_acquire(key, timeout, t)
  local state = redis.call('HGET', key, 'state') or 'closed'
  if state == 'closed' then return 'go', state end
  if state == 'open' then
    local opened = tonumber(redis.call('HGET', key, 'opened_at') or '0')
    if t - opened < timeout then return 'wait', state end
    redis.call('HSET', key, 'state', 'half_open', 'probe_at', tostring(t))
    return 'probe', 'half_open'
  end
  -- half-open: one probe is out; if it never reported back (its forwarder died), allow another after timeout
  local probe_at = tonumber(redis.call('HGET', key, 'probe_at') or '0')
  if t - probe_at >= timeout then
    redis.call('HSET', key, 'probe_at', tostring(t))
    return 'probe', state
  end
  return 'wait', state
end
"""

# breaker_record(breaker hash, success, threshold, now) -> old state, new state.
RECORD_LUA = """
local function breaker_record(key, success, threshold, t)
  local current = redis.call('HMGET', key, 'state', 'failures')
  local state = current[1] or 'closed'
  if success then
    -- the common case, closed with no failure counted, writes nothing
    if state ~= 'closed' or tonumber(current[2] or '0') ~= 0 then
      redis.call('HSET', key, 'state', 'closed', 'failures', 0)
    end
    return state, 'closed'
  end
  if state == 'half_open' then
    redis.call('HSET', key, 'state', 'open', 'opened_at', tostring(t), 'failures', 0)
    return state, 'open'
  end
  if state == 'open' then return state, state end
  local failures = redis.call('HINCRBY', key, 'failures', 1)
  if failures >= threshold then
    redis.call('HSET', key, 'state', 'open', 'opened_at', tostring(t), 'failures', 0)
    return state, 'open'
  end
  return state, state
end
"""

# KEYS[1]: breaker hash. ARGV: timeout (s). Returns {decision, state}.
_ACQUIRE = (
    CLOCK_LUA
    + ACQUIRE_LUA
    + """
local decision, state = breaker_acquire(KEYS[1], tonumber(ARGV[1]), redis_now())
return {decision, state}
"""
)

# KEYS[1]: breaker hash. ARGV: outcome ("success" | "failure"), threshold. Returns {old state, new state}.
_RECORD = (
    CLOCK_LUA
    + RECORD_LUA
    + """
local old, new = breaker_record(KEYS[1], ARGV[1] == 'success', tonumber(ARGV[2]), redis_now())
return {old, new}
"""
)


@dataclass(frozen=True)
class Snapshot:
    state: str
    failures: int
    opened_at: float | None


def breaker_key(destination: str = "moog") -> str:
    return key("breaker", destination)


class CircuitBreaker:
    def __init__(self, client: redis.Redis, destination: str = "moog") -> None:
        self.client = client
        self.destination = destination
        self.key = breaker_key(destination)
        self._acquire = client.register_script(_ACQUIRE)
        self._record = client.register_script(_RECORD)

    def acquire(self, timeout: float) -> str:
        """ "go", "probe" (you are the one half-open attempt) or "wait" (do not attempt now)."""
        decision: str
        state: str
        decision, state = (part.decode() for part in self._acquire(keys=[self.key], args=[timeout]))
        self.observe_acquire(decision, state)
        return decision

    def record(self, success: bool, threshold: int) -> tuple[str, str]:
        """Report an attempt's outcome; returns (state before, state after)."""
        outcome = "success" if success else "failure"
        old, new = (part.decode() for part in self._record(keys=[self.key], args=[outcome, threshold]))
        self.observe_record(old, new)
        return old, new

    # Scripts that run the breaker's Lua inside a larger step (delivery/gate.py) report through these.

    def observe_acquire(self, decision: str, state: str) -> None:
        if decision == "probe" and state == HALF_OPEN:
            TRANSITIONS.labels(self.destination, HALF_OPEN).inc()

    def observe_record(self, old: str, new: str) -> None:
        if old != new:
            TRANSITIONS.labels(self.destination, new).inc()

    def snapshot(self) -> Snapshot:
        # redis-py types replies as bytes | str whatever the client; ours never sets decode_responses.
        stored: dict[bytes, bytes] = self.client.hgetall(self.key)  # type: ignore[assignment]
        raw = {k.decode(): v.decode() for k, v in stored.items()}
        opened = raw.get("opened_at")
        return Snapshot(raw.get("state", CLOSED), int(raw.get("failures", 0)), float(opened) if opened else None)

    def reset(self) -> None:
        self.client.delete(self.key)
