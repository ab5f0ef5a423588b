"""The Moogsoft rate limit shared by all forwarders: a token bucket in Redis on Redis ``TIME``.

``moog_rate_limit`` requests per ``moog_rate_period`` seconds, read per use. A forwarder that gets no
token waits (its alerts stay pending); nothing is ever dropped for the limit.
"""

from __future__ import annotations

import redis
from prometheus_client import Counter

from core.redis import key
from delivery.breaker import CLOCK_LUA

WAITS = Counter("mutt_forwarder_rate_limit_waits_total", "Times a forwarder waited for the shared rate limit.")

# bucket_take(bucket hash, limit, period s, tokens wanted, now) -> "0" when granted, else the seconds to
# wait (a string: Lua numbers lose their fraction on the way out). A Lua function so that the
# forwarder's gate script (delivery/gate.py) takes its token inside its one round trip.
TAKE_LUA = """
local function bucket_take(key, limit, period, wanted, t)
  local rate = limit / period
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1] or limit)
  local stamp = tonumber(bucket[2] or t)
  tokens = math.min(limit, tokens + (t - stamp) * rate)
  local result = '0'
  if tokens >= wanted then
    tokens = tokens - wanted
  else
    result = tostring((wanted - tokens) / rate)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(t))
  redis.call('EXPIRE', key, math.ceil(period * 2) + 1)
  return result
end
"""

# KEYS[1]: bucket hash. ARGV: limit (tokens), period (s), tokens wanted.
_TAKE = (
    CLOCK_LUA
    + TAKE_LUA
    + """
return bucket_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), redis_now())
"""
)


class SharedRateLimit:
    def __init__(self, client: redis.Redis, destination: str = "moog") -> None:
        self.key = key("ratelimit", "forwarder", destination)
        self._take = client.register_script(_TAKE)

    def take(self, limit: int, period: float, wanted: int = 1) -> float:
        """0.0 when ``wanted`` tokens were taken, else how many seconds to wait before asking again."""
        return self.observe(float(self._take(keys=[self.key], args=[limit, period, min(wanted, limit)])))

    @staticmethod
    def observe(wait: float) -> float:
        """Count a wait (also for tokens asked for inside another script); returns ``wait``."""
        if wait > 0:
            WAITS.inc()
        return wait
