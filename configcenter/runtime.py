"""``get_setting(key)``: the value of a runtime setting, fresh within a second, in any process.

Each process keeps a snapshot of the overridden values. A background thread subscribed to
``mutt:config:updates`` reloads it when a change is announced (and after every reconnect, since
announcements may have been missed meanwhile); a short TTL reloads it anyway, as a safety net.
Reading is a dictionary lookup, cheap enough to do per use on the hot path, which is what
components must do: never copy a setting at start-up.

Where the values come from, in order: Redis (the copy written on every change); if Redis has lost
it (restarted without persistence), the database, which then repopulates Redis; if Redis is
unreachable, the last snapshot; with no snapshot yet, the database; failing that, the defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from django.conf import settings

from configcenter.registry import REGISTRY, InvalidSettingValue, get_definition

logger = logging.getLogger("mutt.config")


@dataclass(frozen=True)
class Snapshot:
    values: dict[str, Any]
    source: str  # redis | database | defaults
    loaded_at: float = field(default_factory=time.monotonic)


class _Runtime:
    """Process-wide state: the snapshot, the subscriber thread, and the pid that owns them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: Snapshot | None = None
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.subscribed = threading.Event()
        self.reload_failures = 0


_runtime = _Runtime()


def get_setting(key: str) -> Any:
    """The current value of ``key``; raises UnknownSetting for an unregistered key."""
    definition = get_definition(key)
    snapshot = _fresh_snapshot()
    return snapshot.values.get(key, definition.default)


def current_snapshot() -> Snapshot:
    return _fresh_snapshot()


def _fresh_snapshot() -> Snapshot:
    state = _runtime
    if state.pid != os.getpid():
        _reset_after_fork()
        state = _runtime
    snapshot = state.snapshot
    if snapshot is None or time.monotonic() - snapshot.loaded_at > settings.MUTT_CONFIG_TTL_SECONDS:
        with state.lock:
            snapshot = state.snapshot
            if snapshot is None or time.monotonic() - snapshot.loaded_at > settings.MUTT_CONFIG_TTL_SECONDS:
                snapshot = _reload(state)
        _ensure_subscriber()
    return snapshot


def reload() -> Snapshot:
    """Build a new snapshot from the best source available and install it."""
    return _reload(_runtime)


def _reload(state: _Runtime) -> Snapshot:
    from configcenter import settings_service

    try:
        snapshot = Snapshot(_read_redis(), "redis")
    except redis.RedisError as exc:
        state.reload_failures += 1
        if state.snapshot is not None:
            logger.warning("Redis unreachable for settings (%s); keeping the last known values", exc)
            # Keep serving the last values; retry after another TTL rather than on every read.
            snapshot = Snapshot(state.snapshot.values, state.snapshot.source)
        else:
            try:
                snapshot = Snapshot(settings_service.stored_overrides(), "database")
                logger.warning("Redis unreachable for settings (%s); read them from the database", exc)
            except Exception:
                logger.exception("neither Redis nor the database answered; using setting defaults")
                snapshot = Snapshot({}, "defaults")
    state.snapshot = snapshot
    return snapshot


def _read_redis() -> dict[str, Any]:
    from configcenter import settings_service
    from mutt_project.redis import get_redis

    client = get_redis()
    pipe = client.pipeline(transaction=False)
    pipe.exists(settings_service.loaded_marker_key())
    pipe.hgetall(settings_service.values_key())
    loaded, raw = pipe.execute()
    if not loaded:
        # Redis lost the copy (restart without persistence, flush): rebuild it from the database.
        overrides = settings_service.stored_overrides()
        settings_service.publish_overrides(overrides)
        return overrides
    values = {}
    for raw_key, raw_value in raw.items():
        setting_key = raw_key.decode()
        definition = REGISTRY.get(setting_key)
        if definition is None:
            continue
        try:
            values[setting_key] = definition.parse(orjson.loads(raw_value))
        except (InvalidSettingValue, orjson.JSONDecodeError):
            logger.error("ignoring a malformed value of %s in Redis", setting_key)
    return values


# --- the subscriber -----------------------------------------------------------------------------


def _ensure_subscriber() -> None:
    state = _runtime
    if state.thread is not None and state.thread.is_alive():
        return
    with state.lock:
        if state.thread is not None and state.thread.is_alive():
            return
        state.stop.clear()
        state.thread = threading.Thread(target=_subscribe_loop, args=(state,), name="mutt-config-sub", daemon=True)
        state.thread.start()


def _subscribe_loop(state: _Runtime) -> None:
    from configcenter.settings_service import updates_channel
    from mutt_project.redis import get_redis

    backoff = 0.1
    while not state.stop.is_set():
        pubsub = None
        try:
            pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(updates_channel())
            # Anything announced while we were not listening is picked up by this reload.
            _reload_from_thread(state)
            state.subscribed.set()
            backoff = 0.1
            while not state.stop.is_set():
                message = pubsub.get_message(timeout=0.25)  # short, so a stop is noticed quickly
                if message is not None:
                    _reload_from_thread(state)
        except redis.RedisError as exc:
            state.subscribed.clear()
            logger.warning("settings subscription lost (%s); reconnecting in %.1fs", exc, backoff)
            state.stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        except Exception:
            state.subscribed.clear()
            logger.exception("settings subscriber failed; restarting it in %.1fs", backoff)
            state.stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            if pubsub is not None:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()


def _reload_from_thread(state: _Runtime) -> None:
    from django.db import connections

    try:
        with state.lock:
            _reload(state)
    finally:
        # A reload may fall back to the database; this thread must not keep a connection idle.
        connections.close_all()


def _reset_after_fork() -> None:
    global _runtime
    # A forked child has a copy of the parent's lock and no subscriber thread: start afresh.
    _runtime = _Runtime()


def reset(wait: bool = True) -> None:
    """Stop the subscriber and forget the snapshot (tests, and after the Redis URL changes)."""
    global _runtime
    state = _runtime
    state.stop.set()
    if wait and state.thread is not None:
        state.thread.join(timeout=5)
    _runtime = _Runtime()


def wait_until_subscribed(timeout: float = 5.0) -> bool:
    _fresh_snapshot()
    return _runtime.subscribed.wait(timeout)
