"""The Moogsoft rate limit shared by all forwarders: a token bucket in Redis on Redis ``TIME``.

``moog_rate_limit`` requests per ``moog_rate_period`` seconds, read per use. A forwarder that gets no
token waits (its alerts stay pending); nothing is ever dropped for the limit.
"""

from __future__ import annotations

import redis
from prometheus_client import Counter

from mutt_project.redis import key

WAITS = Counter("mutt_forwarder_rate_limit_waits_total", "Times a forwarder waited for the shared rate limit.")

# KEYS[1]: bucket hash. ARGV: limit (tokens), period (s), tokens wanted.
# Returns 0 when granted, else the seconds to wait (as a string, Lua numbers lose their fraction).
_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local limit, period, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rate = limit / period
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or limit)
local stamp = tonumber(redis.call('HGET', KEYS[1], 'ts') or t)
tokens = math.min(limit, tokens + (t - stamp) * rate)
local result = '0'
if tokens >= wanted then
  tokens = tokens - wanted
else
  result = tostring((wanted - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
redis.call('EXPIRE', KEYS[1], math.ceil(period * 2) + 1)
return result
"""


class SharedRateLimit:
    def __init__(self, client: redis.Redis, destination: str = "moog") -> None:
        self.key = key("ratelimit", "forwarder", destination)
        self._take = client.register_script(_TAKE)

    def take(self, limit: int, period: float, wanted: int = 1) -> float:
        """0.0 when ``wanted`` tokens were taken, else how many seconds to wait before asking again."""
        wait = float(self._take(keys=[self.key], args=[limit, period, min(wanted, limit)]))
        if wait > 0:
            WAITS.inc()
        return wait
