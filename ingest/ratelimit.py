"""Admission to the ingest stream in one Redis round trip: rate limits, backpressure, then XADD.

One Lua script decides and acts atomically, so concurrent requests on any number of web pods can
neither overshoot the queue depth nor spend the same tokens twice:

1. Two token buckets, refilled continuously from Redis ``TIME`` (one clock for every pod): global
   (``ingest_max_rate`` events/s) and per sender, an API key or a listener's peer
   (``ingest_key_max_rate``). Capacity is the rate, i.e. one second of burst. A request of n events
   is admitted when both buckets hold at least one token, and then both are debited by n. A bucket
   may so go negative by at most one batch ("borrowing"): a batch larger than the rate is never
   refused forever, and the debt it leaves makes the following requests wait, so the average rate
   still holds. Refusal: 429 with the seconds until the emptier bucket is back at one token.
2. Backpressure: if XLEN(stream) + n would exceed ``ingest_max_queue_depth``, refuse (503) and
   debit nothing.
3. Otherwise XADD every event (field ``e``, the JSON made by the caller) and debit the buckets.

The limits are arguments, read per request by the caller, so a settings change applies at once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from redis.connection import AbstractConnection

from core import contracts, streams
from core.redis import evalsha_on, key

BACKPRESSURE_RETRY_AFTER = 2

_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local global_rate, key_rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_depth = tonumber(ARGV[3])
local first_event = 6
local n = #ARGV - first_event + 1

-- Tokens in a bucket now: the stored level plus what accrued since, capped at capacity (= rate).
-- A missing bucket is a full one (buckets expire once they would have refilled).
local function level(bucket, rate)
  local state = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or ts == nil then return rate end
  local elapsed = math.max(0, now - ts)  -- a clock stepping back must not drain the bucket
  return math.min(rate, tokens + elapsed * rate)
end

local function store(bucket, tokens, rate)
  redis.call('HSET', bucket, 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', bucket, math.ceil((rate - tokens) / rate * 1000) + 1000)
end

local global_tokens = level(KEYS[1], global_rate)
local key_tokens = level(KEYS[2], key_rate)
local depth = redis.call('XLEN', KEYS[3])

if global_tokens < 1 or key_tokens < 1 then
  local wait, which = 0, 'global'
  if global_tokens < 1 then wait = (1 - global_tokens) / global_rate end
  if key_tokens < 1 and (1 - key_tokens) / key_rate > wait then
    wait, which = (1 - key_tokens) / key_rate, 'key'
  end
  return {1, math.max(1, math.ceil(wait)), which, depth}
end

if depth + n > max_depth then
  return {2, depth}
end

store(KEYS[1], global_tokens - n, global_rate)
store(KEYS[2], key_tokens - n, key_rate)
if depth == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  -- The stream is gone (new deployment, Redis restarted empty): recreate the alerters' group with
  -- it, from the start, so what is added now waits for them.
  redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[4], '0', 'MKSTREAM')
end
local ids = {}
for i = first_event, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[3], '*', ARGV[5], ARGV[i])
end
-- One string rather than n replies: parsing thousands of reply items costs the client more than the XADDs.
return {0, depth + n, table.concat(ids, ' ')}
"""


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    RATE_LIMITED = "rate_limited"
    BACKPRESSURE = "backpressure"


@dataclass(frozen=True)
class Limits:
    global_rate: int
    key_rate: int
    max_depth: int


@dataclass(frozen=True)
class Admission:
    outcome: Outcome
    backlog: int  # XLEN of the stream, after the XADDs when accepted
    entry_ids: tuple[str, ...] = ()
    retry_after: int | None = None
    limited_by: str | None = None  # "global" or "key" when rate limited


def global_bucket() -> str:
    return key("ratelimit", "ingest", "global")


def key_bucket(rate_key: str) -> str:
    """The sender's bucket: an API key's public prefix, or what ``admission.Sender.listener`` makes."""
    return key("ratelimit", "ingest", "key", rate_key)


_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()  # how Redis names it
_groups_lock = threading.Lock()
_groups_ensured: set[str] = set()


def admit(client: redis.Redis, *, rate_key: str, payloads: list[bytes], limits: Limits) -> Admission:
    """Rate-limit, check the backlog and enqueue ``payloads`` (JSON events) atomically.

    The script alone: :func:`ingest.admission.admit` is the entry point that checks events and calls it."""
    stream = streams.ingest_stream()
    _ensure_group_once(client, stream)
    reply = _connections.run_script(
        client,
        [global_bucket(), key_bucket(rate_key), stream],
        [limits.global_rate, limits.key_rate, limits.max_depth, contracts.ALERTERS_GROUP, contracts.PAYLOAD_FIELD,
         *payloads],
    )  # fmt: skip
    code = int(reply[0])
    if code == 0:
        return Admission(Outcome.ACCEPTED, int(reply[1]), tuple(_text(reply[2]).split(" ")))
    if code == 1:
        return Admission(Outcome.RATE_LIMITED, int(reply[3]), retry_after=int(reply[1]), limited_by=_text(reply[2]))
    return Admission(Outcome.BACKPRESSURE, int(reply[1]), retry_after=BACKPRESSURE_RETRY_AFTER)


class _ScriptConnections:
    """Connections kept for the admission script, beside ``client``'s pool rather than in it.

    A command through redis-py's client checks a connection out of the pool and back in (locks, a
    readiness poll, observability hooks): measured on one request, that cost more client CPU than
    packing the script call and parsing its reply. A request borrows one of these connections instead.
    They are made as the pool makes its own (same class, so the same rotating credential, timeouts,
    health checks and retry policy) and are checked the way the pool checks a connection it hands
    out: one that Redis closed while it was idle is reopened before use, not failed.
    """

    MAX_IDLE = 16  # more concurrent requests than this in one process open and close their own

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[AbstractConnection] = []
        self._pool: redis.ConnectionPool | None = None

    def run_script(self, client: redis.Redis, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA of the admission script; loads it if Redis lacks it."""
        pool = client.connection_pool
        connection = self._borrow(pool)
        try:
            # As redis-py's client does: the connection's retry policy, disconnecting after each failure.
            return connection.retry.call_with_retry(
                lambda: evalsha_on(connection, _SCRIPT_SHA, _SCRIPT, keys, args), lambda _error: connection.disconnect()
            )
        finally:
            self._give_back(pool, connection)

    def _borrow(self, pool: redis.ConnectionPool) -> AbstractConnection:
        with self._lock:
            if pool is not self._pool:  # a new client (reset_clients, another REDIS_URL)
                for idle in self._idle:
                    idle.disconnect()
                self._idle, self._pool = [], pool
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            fresh: AbstractConnection = pool.connection_class(**pool.connection_kwargs)  # connects on first use
            return fresh
        try:
            stale = connection.is_connected and connection.can_read()  # closed by Redis, or unread data
        except (redis.ConnectionError, OSError):
            stale = True
        if stale:
            connection.disconnect()
        return connection

    def _give_back(self, pool: redis.ConnectionPool, connection: AbstractConnection) -> None:
        with self._lock:
            if pool is self._pool and len(self._idle) < self.MAX_IDLE:
                self._idle.append(connection)
                return
        connection.disconnect()

    def after_fork_in_child(self) -> None:
        # The sockets are the parent's: drop them unclosed. The lock may have been held by another
        # thread of the parent at the fork, with no thread left here to release it.
        self._lock = threading.Lock()
        self._idle, self._pool = [], None


_connections = _ScriptConnections()
os.register_at_fork(after_in_child=_connections.after_fork_in_child)


def _ensure_group_once(client: redis.Redis, stream: str) -> None:
    """Create the alerters' group once per process, so entries are kept before any alerter runs.

    Should the stream vanish later (Redis restarted empty), the script recreates stream and group.
    """
    if stream in _groups_ensured:
        return
    with _groups_lock:
        if stream not in _groups_ensured:
            streams.ensure_group(client, stream, contracts.ALERTERS_GROUP)
            _groups_ensured.add(stream)


def forget_ensured_groups() -> None:
    """Make the next request ensure the group again (tests, after the stream was deleted)."""
    with _groups_lock:
        _groups_ensured.clear()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
