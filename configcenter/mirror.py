"""The Redis copy of runtime settings that every process reads.

One hash holds, per stored key, ``{"v": value or null, "ver": version}`` where the version is the id of
the key's newest history row (a database sequence; changes of one key are serialised by a row lock,
so a higher id is always the newer value). A marker field says the hash mirrors the database:

- a change writes its own key only, and only if its version is newer (compare-and-set in Lua), so
  concurrent changes of different keys cannot erase each other and a late publish cannot roll back;
- a missing marker (Redis restarted empty, or the hash was evicted) means "rebuild from the database",
  done only while the marker is still missing, so a slow rebuild cannot overwrite a newer change;
- ``reconcile()`` compares versions with the database and republishes what Redis missed (a publish
  that failed while Redis was briefly unreachable), so every copy converges.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import orjson
from django.db.models import Max

from configcenter.models import DynamicSetting
from configcenter.registry import REGISTRY, InvalidSettingValue
from core import contracts
from core.redis import get_redis, key

logger = logging.getLogger("mutt.config")

MARKER = "__loaded__"

# key -> digest of the refused value last logged: each refused value is logged once per process, wherever
# it was read (database or Redis), not on every read (readers run every second); `check --deploy` lists
# them (mutt.W005). A different refused value of the same key is logged again.
_reported: dict[str, bytes] = {}
_reported_lock = threading.Lock()


def _report_refused(where: str, setting_key: str, raw: Any, reason: str) -> None:
    """Log a stored value that fails validation, once per process and value; never the value itself,
    which may hold a secret (a URL with a password)."""
    digest = hashlib.sha256(repr(raw).encode()).digest()
    with _reported_lock:
        if _reported.get(setting_key) == digest:
            return
        _reported[setting_key] = digest
    logger.error(
        "%s: the value stored in %s fails validation (%s); using the default until it is set again "
        "(mutt.W005; logged once per process)",
        setting_key,
        where,
        reason,
        extra={"setting": setting_key},
    )


def forget_reported() -> None:
    """Log refused values again (tests)."""
    with _reported_lock:
        _reported.clear()


def refused_stored_values() -> dict[str, str]:
    """Stored, registered settings whose value today's validation refuses: key -> why (never the value)."""
    refused = {}
    for setting_key, stored in DynamicSetting.objects.filter(value__isnull=False).values_list("key", "value"):
        definition = REGISTRY.get(setting_key)
        if definition is None:
            continue
        try:
            definition.parse(stored)
        except InvalidSettingValue as exc:
            refused[setting_key] = exc.message
    return refused


# KEYS[1]: values hash. ARGV: marker, field, payload, version, channel, then the full map as pairs.
_PUBLISH = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('DEL', KEYS[1])
  for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], ARGV[1], '1')
else
  local current = redis.call('HGET', KEYS[1], ARGV[2])
  local version = -1
  if current then
    local ok, decoded = pcall(cjson.decode, current)
    if ok and type(decoded) == 'table' and decoded['ver'] then version = tonumber(decoded['ver']) end
  end
  if version < tonumber(ARGV[4]) then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
end
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""

# KEYS[1]: values hash. ARGV: marker, then the full map as pairs. Writes only while the marker is missing.
_REBUILD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 1
"""


def values_key() -> str:
    return key("config", "values")


def updates_channel() -> str:
    return key(contracts.CONFIG_CHANNEL)


def encode(value: Any, version: int) -> bytes:
    return orjson.dumps({"v": value, "ver": version})


def database_state() -> dict[str, tuple[Any, int]]:
    """Every stored, registered setting: (value or None for the default, version)."""
    versions = dict(
        DynamicSetting.history.values("key").annotate(version=Max("history_id")).values_list("key", "version")
    )
    state: dict[str, tuple[Any, int]] = {}
    for setting_key, stored in DynamicSetting.objects.values_list("key", "value"):
        definition = REGISTRY.get(setting_key)
        if definition is None:
            continue
        value = None
        if stored is not None:
            try:
                value = definition.parse(stored)
            except InvalidSettingValue as exc:
                _report_refused("the database", setting_key, stored, exc.message)
        state[setting_key] = (value, versions.get(setting_key, 0))
    return state


def _pairs(state: dict[str, tuple[Any, int]]) -> list[Any]:
    pairs: list[Any] = []
    for setting_key, (value, version) in state.items():
        pairs += [setting_key, encode(value, version)]
    return pairs


def publish(setting_key: str, state: dict[str, tuple[Any, int]] | None = None) -> None:
    """Write one key's stored value (if newer than Redis's) and announce it; rebuild if the copy is lost."""
    state = database_state() if state is None else state
    value, version = state.get(setting_key, (None, 0))
    client = get_redis()
    args = [MARKER, setting_key, encode(value, version), version, updates_channel(), *_pairs(state)]
    client.eval(_PUBLISH, 1, values_key(), *args)


def rebuild_if_missing(state: dict[str, tuple[Any, int]]) -> bool:
    """Restore the copy from ``state`` (read from the database) unless someone already did."""
    return bool(get_redis().eval(_REBUILD, 1, values_key(), MARKER, *_pairs(state)))


def read() -> dict[str, Any] | None:
    """The overridden values in Redis, or None when the copy is lost (no marker)."""
    raw = get_redis().hgetall(values_key())
    if MARKER.encode() not in raw:
        return None
    values: dict[str, Any] = {}
    for raw_key, raw_value in raw.items():
        setting_key = raw_key.decode()
        definition = REGISTRY.get(setting_key)
        if definition is None:
            continue
        try:
            entry = orjson.loads(raw_value)
            value = entry["v"] if isinstance(entry, dict) else None
            if value is not None:
                values[setting_key] = definition.parse(value)
        except InvalidSettingValue as exc:
            _report_refused("Redis", setting_key, value, exc.message)
        except (orjson.JSONDecodeError, KeyError):
            _report_refused("Redis", setting_key, raw_value, "not a setting entry")
    return values


def reconcile() -> list[str]:
    """Republish the keys whose Redis version is older than the database's; returns them."""
    state = database_state()
    raw = get_redis().hgetall(values_key())
    stale = []
    for setting_key, (_, version) in state.items():
        try:
            current = orjson.loads(raw.get(setting_key.encode(), b"null") or b"null")
        except orjson.JSONDecodeError:
            current = None
        if not isinstance(current, dict) or int(current.get("ver", -1)) < version:
            stale.append(setting_key)
    for setting_key in stale:
        publish(setting_key, state)
    if stale:
        logger.warning("republished settings Redis had missed", extra={"keys": stale})
    return stale


def replace(values: dict[str, Any]) -> None:
    """Overwrite the copy with ``values`` (tests and emergency use; bypasses versions) and announce it."""
    client = get_redis()
    pipe = client.pipeline(transaction=True)
    pipe.delete(values_key())
    pipe.hset(values_key(), MARKER, "1")
    for setting_key, value in values.items():
        pipe.hset(values_key(), setting_key, encode(value, 0))
    pipe.publish(updates_channel(), "*")
    pipe.execute()
