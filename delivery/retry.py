"""Delayed retries without sleeping: a per-destination schedule in Redis (sorted set by due time).

Scheduling a retry and acknowledging the stream entry happen in one Lua call, and due retries go back
into the alert stream in one Lua call (added, then removed from the schedule), so a crash at any
point loses nothing: an alert is always either in the stream or in the schedule.
"""

from __future__ import annotations

import random

import redis

from core.redis import key

# KEYS: schedule zset, alert stream, then optionally the in-flight hash. ARGV: group, then triples (due time,
# member JSON, entry id to ack). An entry scheduled is answered: its in-flight record goes in the same call.
_SCHEDULE_AND_ACK = """
for i = 2, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[i + 2])
  redis.call('XDEL', KEYS[2], ARGV[i + 2])
  if KEYS[3] then redis.call('HDEL', KEYS[3], ARGV[i + 2]) end
end
return (#ARGV - 1) / 3
"""

# release_due(schedule zset, alert stream, now epoch s, max items) -> how many went back. A Lua function
# so that the forwarder's gate script (delivery/gate.py) releases due retries inside its one round trip.
RELEASE_LUA = """
local function release_due(schedule, stream, now, limit)
  local due = redis.call('ZRANGEBYSCORE', schedule, '-inf', now, 'LIMIT', 0, limit)
  for _, member in ipairs(due) do
    redis.call('XADD', stream, '*', 'e', member)
    redis.call('ZREM', schedule, member)
  end
  return #due
end
"""

# KEYS: schedule zset, alert stream. ARGV: now (epoch s), max items.
_RELEASE_DUE = RELEASE_LUA + "return release_due(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))\n"


def schedule_key(destination: str = "moog") -> str:
    return key("retry", destination)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling)


class RetrySchedule:
    def __init__(self, client: redis.Redis, stream: str, group: str, destination: str = "moog") -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.key = schedule_key(destination)
        self._schedule = client.register_script(_SCHEDULE_AND_ACK)
        self._release = client.register_script(_RELEASE_DUE)

    def schedule_and_ack(self, items: list[tuple[float, bytes, bytes]], *, inflight_key: str | None = None) -> None:
        """Schedule (due epoch seconds, alert JSON, entry id) and acknowledge those entries, atomically; with
        ``inflight_key``, their in-flight records are deleted in the same call."""
        if not items:
            return
        args: list[str | float | bytes] = [self.group]
        for due, member, entry_id in items:
            args += [due, member, entry_id]
        keys = [self.key, self.stream] if inflight_key is None else [self.key, self.stream, inflight_key]
        self._schedule(keys=keys, args=args)

    def release_due(self, now: float, limit: int = 1000) -> int:
        """Move retries whose time has come back into the alert stream; returns how many."""
        return int(self._release(keys=[self.key, self.stream], args=[now, limit]))

    def depth(self) -> int:
        return int(self.client.zcard(self.key))
