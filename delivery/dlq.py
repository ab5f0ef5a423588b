"""Dead-letter queue primitives on Redis streams: read entries, and replay, bury or purge them atomically.

Three streams (``streams.dlq_stream(name)``), their records declared in :mod:`core.contracts`:

- ``alerter``: ingest events the alerter could not process (``AlerterDeadLetter``);
- ``moog``: alerts Moogsoft did not take (``MoogDeadLetter``);
- ``dead``: entries replayed too often (poison), or buried by an operator: every field of the original
  entry plus ``origin`` (the queue it came from), ``replays`` (the event's replay count) and ``moved_at``
  (``BuriedFields``).

Replaying puts ``e`` back where it came from: alerter entries on the ingest stream as they are, Moogsoft
entries on the alert stream with ``attempts`` reset to 0 (a fresh set of delivery retries), dead entries
wherever their ``origin`` queue replays to. Each replay increments a per-event counter
(``replays:<event id>``, kept 30 days) that outlives the entry, so an event that fails again and comes
back into a DLQ as a new entry keeps its count.

Replay, bury and purge are Lua scripts: the check that an entry still exists, the write elsewhere and the
XDEL are one step, so two operators (or an operator and the remediation worker) acting on the same entry
cannot replay it twice; the second one finds it ``missing``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from core import contracts, exactjson, streams
from core.redis import key

REPLAY_COUNT_TTL = 30 * 86_400
# Stream ids are "<ms>-<seq>"; anything else would make XRANGE fail for the whole batch.
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_SCAN_CHUNK = 500
_SCRIPT_BATCH = 200

# Per-entry result codes.
REPLAYED, DEAD, PURGED, MISSING, INVALID = "replayed", "dead", "purged", "missing", "invalid"


class UnknownQueue(ValueError):
    def __init__(self, queue: str) -> None:
        super().__init__(f"unknown DLQ {queue!r}; use one of {', '.join(contracts.DLQ_QUEUES)}")


def check_queue(queue: str) -> str:
    if queue not in contracts.DLQ_QUEUES:
        raise UnknownQueue(queue)
    return queue


def replay_count_key(event_key: str) -> str:
    return key("replays", event_key)


# --- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DlqEntry:
    """One DLQ entry: its stream id, its metadata fields (as text) and the raw payload ``e``."""

    queue: str
    id: str
    fields: dict[str, str]
    raw_payload: bytes

    @classmethod
    def from_stream(cls, queue: str, entry_id: bytes | str, raw: dict[bytes, bytes]) -> DlqEntry:
        text = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items() if k != contracts.PAYLOAD_FIELD}
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return cls(queue, entry_id, text, raw.get(contracts.PAYLOAD_FIELD, b""))

    @property
    def reason(self) -> str:
        return self.fields.get("reason", "")

    @property
    def error(self) -> str:
        return self.fields.get("error", "")

    @property
    def response(self) -> str:
        """Moogsoft's response excerpt (Moogsoft entries); empty for the others."""
        return self.fields.get("response", "")

    @property
    def attempts(self) -> int | None:
        value = self.fields.get("attempts", "")
        return int(value) if value.isdigit() else None

    @property
    def origin(self) -> str:
        """The queue whose replay rules apply: this one, or for a dead entry the one it came from."""
        return self.fields.get("origin", "") if self.queue == contracts.DEAD_QUEUE else self.queue

    def payload(self) -> dict[str, Any] | None:
        """The payload as a JSON object, or None when it is not one (a malformed entry)."""
        try:
            value = exactjson.loads(self.raw_payload)  # every integer exact: a replay writes the payload again
        except ValueError:  # orjson's JSONDecodeError and ExactParseError alike
            return None
        return value if isinstance(value, dict) else None

    def payload_text(self) -> str:
        """The payload for people: indented JSON when it parses, else the raw text. Integers past 64 bits
        (an event's ``extra`` keeps them) are shown with every digit, as they are stored: orjson would read
        them as floats and cannot write them, so such a payload is read and written by the standard library."""
        raw = self.raw_payload
        try:
            if not exactjson.may_hold_long_integer(raw):
                return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
            return json.dumps(exactjson.loads_exact(raw), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):  # not JSON (orjson's JSONDecodeError is a ValueError), or too deep
            return raw.decode("utf-8", "replace")

    @property
    def event_key(self) -> str:
        """What replays are counted by: the event id when known, else the id it had in its source stream."""
        payload = self.payload() or {}
        event_id = self.fields.get("event_id") or payload.get("event_id")
        if isinstance(event_id, str) and event_id:
            return event_id
        return self.fields.get("source_id") or f"{self.queue}:{self.id}"


@dataclass(frozen=True)
class Page:
    """Entries newest first; ``next_before`` is the cursor of the following page (None on the last)."""

    entries: list[DlqEntry]
    next_before: str | None


def is_entry_id(value: str) -> bool:
    return bool(_ENTRY_ID.match(value))


def list_entries(
    client: redis.Redis,
    queue: str,
    *,
    reason: str | None = None,
    before: str | None = None,
    limit: int = 50,
    scan_limit: int = 10_000,
) -> Page:
    """Entries newest first, optionally only one ``reason``, starting below the cursor ``before``.

    With a reason filter at most ``scan_limit`` entries are examined per page, so a page of a huge queue
    stays quick; the cursor then points past what was examined and the next page carries on from there.
    """
    stream = streams.dlq_stream(check_queue(queue))
    start = f"({before}" if before and is_entry_id(before) else "+"
    chunk_size = min(_SCAN_CHUNK, scan_limit) if reason else min(limit + 1, _SCAN_CHUNK)
    matched: list[DlqEntry] = []
    scanned = 0
    while True:
        chunk = client.xrevrange(stream, start, "-", count=chunk_size)
        for entry_id, raw in chunk:
            entry = DlqEntry.from_stream(queue, entry_id, raw)
            scanned += 1
            if reason and entry.reason != reason:
                continue
            if len(matched) == limit:
                return Page(matched, matched[-1].id)  # one more exists: there is a next page
            matched.append(entry)
        if len(chunk) < chunk_size:
            return Page(matched, None)
        last_seen = chunk[-1][0].decode()
        if scanned >= scan_limit:
            return Page(matched, last_seen)
        start = f"({last_seen}"


def get_entry(client: redis.Redis, queue: str, entry_id: str) -> DlqEntry | None:
    if not is_entry_id(entry_id):
        return None
    found = client.xrange(streams.dlq_stream(check_queue(queue)), entry_id, entry_id)
    return DlqEntry.from_stream(queue, *found[0]) if found else None


def oldest_entries(client: redis.Redis, queue: str, reasons: Iterable[str], limit: int) -> list[DlqEntry]:
    """Up to ``limit`` entries whose reason is one of ``reasons``, oldest first (the order they failed in).

    Scans the whole queue if it has to: permanent failures stay until someone purges them, and a scan cap
    would let a heap of them at the head hide transient entries behind it forever.
    """
    wanted = set(reasons)
    stream = streams.dlq_stream(check_queue(queue))
    found: list[DlqEntry] = []
    start = "-"
    while len(found) < limit:
        chunk = client.xrange(stream, start, "+", count=_SCAN_CHUNK)
        if not chunk:
            break
        for entry_id, raw in chunk:
            entry = DlqEntry.from_stream(queue, entry_id, raw)
            if entry.reason in wanted:
                found.append(entry)
                if len(found) == limit:
                    break
        start = f"({chunk[-1][0].decode()}"
    return found


def depths(client: redis.Redis) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for queue in contracts.DLQ_QUEUES:
        pipe.xlen(streams.dlq_stream(queue))
    return dict(zip(contracts.DLQ_QUEUES, (int(n) for n in pipe.execute()), strict=True))


def replay_counts(client: redis.Redis, entries: list[DlqEntry]) -> dict[str, int]:
    """How often each entry's event has been replayed, by entry id."""
    if not entries:
        return {}
    values = client.mget([replay_count_key(entry.event_key) for entry in entries])
    return {entry.id: int(value or 0) for entry, value in zip(entries, values, strict=True)}


# --- changing -------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What happened to each requested entry id (replayed, dead, purged, missing or invalid)."""

    results: dict[str, str] = field(default_factory=dict)
    event_keys: dict[str, str] = field(default_factory=dict)  # entry id -> event id, for reports

    def ids(self, status: str) -> list[str]:
        return [entry_id for entry_id, result in self.results.items() if result == status]

    def count(self, status: str) -> int:
        return len(self.ids(status))

    def by_status(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for entry_id, result in self.results.items():
            grouped.setdefault(result, []).append(entry_id)
        return grouped


# KEYS: [1] the DLQ, [2] the dead queue, then per entry: target stream, replay counter.
# ARGV: [1] mode ("replay" | "dead"), [2] most replays allowed (0: no limit), [3] counter ttl,
#       [4] origin, [5] moved_at, then per entry: id, payload to replay.
# Per entry, in one step: if it is still there, either replay it (XADD the payload to the target,
# count the replay) or, in "dead" mode or when this replay would exceed the limit, copy every field
# to the dead queue with origin, replays and moved_at; then XDEL it. Returns a status per entry.
_REPLAY_OR_BURY = """
local mode, max_replays, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local origin, moved_at = ARGV[4], ARGV[5]
local added = {origin = true, replays = true, moved_at = true}
local results = {}
local n = (#ARGV - 5) / 2
for i = 1, n do
  local id, payload = ARGV[4 + i * 2], ARGV[5 + i * 2]
  local target, counter = KEYS[1 + i * 2], KEYS[2 + i * 2]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 0 then
    results[i] = 'missing'
  else
    local replays = tonumber(redis.call('GET', counter) or '0')
    if mode == 'dead' or (max_replays > 0 and replays + 1 > max_replays) then
      local copy = {}
      local fields = found[1][2]
      for j = 1, #fields, 2 do
        if not added[fields[j]] then
          copy[#copy + 1] = fields[j]
          copy[#copy + 1] = fields[j + 1]
        end
      end
      copy[#copy + 1] = 'origin'; copy[#copy + 1] = origin
      copy[#copy + 1] = 'replays'; copy[#copy + 1] = tostring(replays)
      copy[#copy + 1] = 'moved_at'; copy[#copy + 1] = moved_at
      redis.call('XADD', KEYS[2], '*', unpack(copy))
      results[i] = 'dead'
    else
      redis.call('XADD', target, '*', 'e', payload)
      redis.call('INCR', counter)
      redis.call('EXPIRE', counter, ttl)
      results[i] = 'replayed'
    end
    redis.call('XDEL', KEYS[1], id)
  end
end
return results
"""

# KEYS: [1] the DLQ. ARGV: entry ids. Returns 1 (deleted) or 0 (already gone) per id.
_PURGE = """
local results = {}
for i, id in ipairs(ARGV) do
  results[i] = redis.call('XDEL', KEYS[1], id)
end
return results
"""


def target_stream(origin: str) -> str | None:
    """Where entries of ``origin`` replay to: ingest events to the ingest stream, alerts to the alert stream."""
    stream = contracts.REPLAY_STREAMS.get(origin)
    return None if stream is None else key(stream)


def replay_payload(entry: DlqEntry) -> bytes | None:
    """What a replay puts back, or None when the entry cannot be replayed as it is."""
    if entry.origin == contracts.ALERTER_QUEUE:
        # As it came: the alerter decides again (a malformed event will come back as malformed).
        return entry.raw_payload or None
    if entry.origin == contracts.MOOG_QUEUE:
        alert = entry.payload()
        if alert is None:
            return None
        # A fresh set of delivery retries; everything else (event id, last error) is kept.
        return streams.dumps({**alert, "attempts": 0})
    return None


def replay(client: redis.Redis, queue: str, entry_ids: list[str], *, max_replays: int = 0) -> BatchResult:
    """Replay entries; with ``max_replays`` > 0 an entry whose event would exceed it goes to the dead queue."""
    return _replay_or_bury(client, queue, entry_ids, mode="replay", max_replays=max_replays)


def move_to_dead(client: redis.Redis, queue: str, entry_ids: list[str]) -> BatchResult:
    if check_queue(queue) == contracts.DEAD_QUEUE:
        raise ValueError("entries of the dead queue are already dead")
    return _replay_or_bury(client, queue, entry_ids, mode="dead", max_replays=0)


def purge(client: redis.Redis, queue: str, entry_ids: list[str]) -> BatchResult:
    result = BatchResult()
    valid = _split_valid(entry_ids, result)
    if valid:
        deleted = client.eval(_PURGE, 1, streams.dlq_stream(check_queue(queue)), *valid)
        for entry_id, gone in zip(valid, deleted, strict=True):
            result.results[entry_id] = PURGED if int(gone) else MISSING
    return result


def _split_valid(entry_ids: list[str], result: BatchResult) -> list[str]:
    valid = []
    for entry_id in dict.fromkeys(entry_ids):  # keeps order, drops repeats
        if is_entry_id(entry_id):
            valid.append(entry_id)
        else:
            result.results[entry_id] = MISSING  # no entry can have that id
    return valid


def _read(client: redis.Redis, queue: str, entry_ids: list[str]) -> dict[str, DlqEntry]:
    stream = streams.dlq_stream(queue)
    pipe = client.pipeline(transaction=False)
    for entry_id in entry_ids:
        pipe.xrange(stream, entry_id, entry_id)
    return {
        entry_id: DlqEntry.from_stream(queue, *found[0])
        for entry_id, found in zip(entry_ids, pipe.execute(), strict=True)
        if found
    }


def _replay_or_bury(
    client: redis.Redis, queue: str, entry_ids: list[str], *, mode: str, max_replays: int
) -> BatchResult:
    check_queue(queue)
    result = BatchResult()
    valid = _split_valid(entry_ids, result)
    entries = _read(client, queue, valid)
    by_origin: dict[str, list[DlqEntry]] = {}
    for entry_id in valid:
        entry = entries.get(entry_id)
        if entry is None:
            result.results[entry_id] = MISSING
            continue
        result.event_keys[entry_id] = entry.event_key
        by_origin.setdefault(entry.origin, []).append(entry)
    moved_at = datetime.now(UTC).isoformat()
    # The dead queue records one origin per call, so a batch of dead entries is split by origin.
    for origin, group in by_origin.items():
        target = target_stream(origin)
        ready: list[tuple[DlqEntry, bytes]] = []
        for entry in group:
            payload = replay_payload(entry) if mode == "replay" else b""
            if target is None or payload is None:
                result.results[entry.id] = INVALID
            else:
                ready.append((entry, payload))
        # Bounded calls: a script blocks Redis while it runs, and other clients must not wait long.
        for start in range(0, len(ready), _SCRIPT_BATCH):
            part = ready[start : start + _SCRIPT_BATCH]
            keys = [streams.dlq_stream(queue), streams.dlq_stream(contracts.DEAD_QUEUE)]
            args: list[Any] = [mode, max_replays, REPLAY_COUNT_TTL, origin, moved_at]
            for entry, payload in part:
                keys += [target, replay_count_key(entry.event_key)]
                args += [entry.id, payload]
            statuses = client.eval(_REPLAY_OR_BURY, len(keys), *keys, *args)
            for (entry, _), status in zip(part, statuses, strict=True):
                result.results[entry.id] = status.decode() if isinstance(status, bytes) else str(status)
    # Report in the order asked.
    result.results = {entry_id: result.results[entry_id] for entry_id in dict.fromkeys(entry_ids)}
    return result
