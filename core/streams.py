"""Redis Streams plumbing shared by ingest, the alerter and the forwarder (ADR-001).

Names are the contracts' (``core.contracts``) with the deployment prefix (``core.redis.key``). Entries carry
one field, ``e``: the event or alert as JSON, so a batch is one XADD per entry in one pipeline and one parse
per entry.

Backlog is the stream's length: consumers trim what every group has acknowledged
(:func:`trim_acknowledged`), so XLEN counts exactly the entries not yet acknowledged plus at most one
batch acknowledged since the last trim. That is what ingest's backpressure compares against.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
import redis

from core import contracts, exactjson
from core.contracts import PAYLOAD_FIELD
from core.redis import key


def ingest_stream() -> str:
    return key(contracts.INGEST_STREAM)


def alerts_stream() -> str:
    """Moogsoft's stream: the alert stream."""
    return destination_stream(contracts.DEFAULT_DESTINATION)


def destination_stream(name: str) -> str:
    """The stream the alerter writes for destination ``name`` and its forwarders read."""
    return key(contracts.destination_stream(name))


def dlq_stream(name: str) -> str:
    """Dead-letter streams: ``alerter``, ``moog``, ``dead`` (``core.contracts.DLQ_QUEUES``)."""
    return key(contracts.dlq_key(name))


def encode(payload: dict[str, Any]) -> dict[bytes, bytes]:
    return {PAYLOAD_FIELD: dumps(payload)}


def dumps(value: Any) -> bytes:
    """``value`` as JSON: orjson's, or the standard library's for what orjson cannot write (an integer past
    64 bits, which an event's ``extra`` or ``variables`` may hold). Raises ValueError when neither can."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    written = exactjson.dumps(value)  # tries orjson once more: only reached for the rare big integer
    if written is None:
        raise ValueError("the payload cannot be written as JSON")
    return written


def decode(fields: dict[bytes, bytes], *, exact_if: str | None = None) -> dict[str, Any]:
    """The payload of an entry; raises ValueError for an entry that is not ours (a poison message).

    An accepted event may hold an integer orjson refuses (over 308 digits): it is read exactly (see
    :func:`loads`), not dead-lettered as malformed; the fallback costs nothing on any other entry. An integer
    of 20 to 308 digits past 64 bits orjson reads as a float; with ``exact_if``, a payload holding that field
    (an alert's ``details``: the varbinds sent on) is read again exactly when it may hold one, so only those
    payloads pay the scan."""
    raw = fields.get(PAYLOAD_FIELD)
    if raw is None:
        raise ValueError(f"entry has no {PAYLOAD_FIELD.decode()!r} field")
    # orjson, or the standard library when orjson refuses a number as infinite: ingest accepts integers of
    # up to 4,300 digits, and orjson reads none past 308 (the fallback costs nothing on any other entry).
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):
            raise
        payload = exactjson.loads_exact(raw)
    if not isinstance(payload, dict):
        raise ValueError("entry payload is not a JSON object")
    if exact_if is not None and payload.get(exact_if) and exactjson.may_hold_long_integer(raw):
        exact: dict[str, Any] = exactjson.loads_exact(raw)
        return exact
    return payload


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing, reading from the beginning.

    Creating it at position 0 before any consumer runs means entries added first are kept for it.
    """
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def is_missing_group(exc: BaseException) -> bool:
    """Whether Redis refused a group read because the consumer group, or its stream, does not exist
    (NOGROUP, also when raised inside a script): Redis restarted empty, or failed over to an empty replica."""
    return isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc)


def recreate_group(client: redis.Redis, stream: str, group: str, *, consumer: str) -> None:
    """Create the lost group again (and the stream) so its consumers carry on; logs one WARNING.

    At id 0, not ``$``: everything still in the stream is read. Entries are deleted when acknowledged, so
    what is there was added since the loss (by ingest, a replay from a DLQ, a retry coming due) and not yet
    read by this group; ``$`` would skip those accepted entries for ever. An entry this group had read but not
    acknowledged (the group deleted while the stream stayed) is read again: a redelivery, which every
    consumer already makes harmless (the audit and the alerts are idempotent per event id, deliveries per
    idempotency record). A concurrent re-creation by another consumer (BUSYGROUP) is fine.
    """
    ensure_group(client, stream, group)
    logging.getLogger("mutt.streams").warning(
        "consumer group %s of %s was missing (Redis restarted empty or failed over?); created it again from "
        "the start of the stream, and %s carries on", group, stream, consumer,
        extra={"stream": stream, "group": group, "consumer": consumer},
    )  # fmt: skip


# Trim everything every group has acknowledged: entries older than the oldest pending entry and
# not newer than the last delivered one. Runs in Redis so the reads and the trim see one state.
_TRIM_SCRIPT = """
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local floor = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local candidate = info['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if pending[1] > 0 then candidate = pending[2] else
    -- nothing pending: everything up to last-delivered is acknowledged; keep from the next id
    local ms, seq = string.match(candidate, '(%d+)-(%d+)')
    candidate = ms .. '-' .. tostring(tonumber(seq) + 1)
  end
  if floor == nil then floor = candidate else
    local fms, fseq = string.match(floor, '(%d+)-(%d+)')
    local cms, cseq = string.match(candidate, '(%d+)-(%d+)')
    if tonumber(cms) < tonumber(fms) or (tonumber(cms) == tonumber(fms) and tonumber(cseq) < tonumber(fseq)) then
      floor = candidate
    end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""


def trim_acknowledged(client: redis.Redis, stream: str) -> int:
    """Remove entries every consumer group has acknowledged; returns how many were removed."""
    return int(client.eval(_TRIM_SCRIPT, 1, stream))


def backlog(client: redis.Redis, stream: str) -> int:
    return int(client.xlen(stream))


def backlogs(client: redis.Redis, names: list[str]) -> list[int]:
    """The lengths of the streams ``names``: one call for one stream, one pipelined round trip for more."""
    if len(names) == 1:
        return [backlog(client, names[0])]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xlen(name)
    return [int(length) for length in pipe.execute()]


def claim_abandoned(
    client: redis.Redis, stream: str, group: str, consumer: str, *, idle_ms: int, count: int
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Take over entries left unacknowledged longer than ``idle_ms`` (a crashed or stuck consumer).

    Redis 7 drops entries deleted meanwhile from the pending list itself; Redis 6.2 answers them as
    bare nils (no id at all), which would stay pending for ever, so this consumer's pending entries
    that no longer exist are acknowledged here.
    """
    result = client.xautoclaim(stream, group, consumer, idle_ms, "0-0", count=count)
    entries = result[1]
    claimed = [(entry_id, fields) for entry_id, fields in entries if entry_id is not None and fields is not None]
    if len(claimed) < len(entries):
        _ack_vanished(client, stream, group, consumer, keep={entry_id for entry_id, _ in claimed})
    return claimed


def _ack_vanished(client: redis.Redis, stream: str, group: str, consumer: str, *, keep: set[bytes]) -> None:
    pending = client.xpending_range(stream, group, min="-", max="+", count=10_000, consumername=consumer)
    pipe = client.pipeline(transaction=False)
    candidates = [row["message_id"] for row in pending if row["message_id"] not in keep]
    for entry_id in candidates:
        pipe.xrange(stream, entry_id, entry_id)
    gone = [entry_id for entry_id, found in zip(candidates, pipe.execute(), strict=True) if not found]
    if gone:
        client.xack(stream, group, *gone)


def forget_consumer_if_done(client: redis.Redis, stream: str, group: str, consumer: str) -> None:
    """Remove a stopping consumer from its group when nothing is pending for it, so consumers of past
    processes do not pile up (and slow XPENDING/XINFO). With entries pending it stays: others claim them."""
    try:
        summary = client.xpending_range(stream, group, min="-", max="+", count=1, consumername=consumer)
        if not summary:
            client.xgroup_delconsumer(stream, group, consumer)
    except redis.RedisError:
        pass  # best effort on the way out


# Remove the consumers of group ARGV[1] that have nothing pending and were not seen for ARGV[2] ms, except
# the caller's own (ARGV[3..]). The group is an argument, not a key: KEYS names only keys (a cluster routes
# a script by its KEYS, and refuses one whose names hash to different slots). One script, so no consumer
# can read an entry between the check and the removal: XGROUP DELCONSUMER drops a consumer's pending
# entries with it, and those would never be delivered again.
# A live consumer removed while idle is harmless: its next read creates it again.
_FORGET_IDLE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local group = ARGV[1]
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], group)
if consumers['err'] then return {} end
local idle_ms = tonumber(ARGV[2])
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local removed = {}
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] > idle_ms and not keep[info['name']] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
"""


def forget_idle_consumers(
    client: redis.Redis, stream: str, group: str, *, idle_seconds: float, keep: Iterable[str] = ()
) -> list[str]:
    """Remove consumers of killed workers: those with nothing pending, idle longer than ``idle_seconds``,
    not named in ``keep``; returns their names. A consumer with entries pending stays whatever its idle
    time: its entries are taken over first (``claim_abandoned``), then it goes at a later sweep."""
    removed = client.eval(_FORGET_IDLE_SCRIPT, 1, stream, group, int(idle_seconds * 1000), *keep)
    return [name.decode() if isinstance(name, bytes) else str(name) for name in removed]


def keep_claimed(client: redis.Redis, stream: str, group: str, consumer: str, entry_ids: list[bytes]) -> None:
    """Reset the idle time of entries this consumer still works on, so nobody takes them over.

    JUSTID does not count as a delivery, so holding entries through an outage does not make them poison.
    """
    if entry_ids:
        # redis-py annotates the ids as an invariant list of the union, which no list[bytes] matches.
        client.xclaim(stream, group, consumer, 0, entry_ids, justid=True)  # type: ignore[arg-type]


def ack_and_delete(pipe: redis.client.Pipeline, stream: str, group: str, entry_ids: list[bytes]) -> None:
    """Acknowledge entries and delete them at once (each stream has one group), so XLEN stays the backlog
    even while an older entry is still pending somewhere."""
    if entry_ids:
        pipe.xack(stream, group, *entry_ids)
        pipe.xdel(stream, *entry_ids)
