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

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from configcenter.registry import get_definition
from core import outage, subscription

logger = logging.getLogger("mutt.config")


@dataclass(frozen=True)
class Snapshot:
    values: dict[str, Any]
    source: str  # redis | database | defaults
    loaded_at: float = field(default_factory=time.monotonic)


class _Runtime:
    """Process-wide state: the snapshot and the subscriber thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: Snapshot | None = None
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


class SettingsView:
    """The settings of one snapshot, for a unit of work that reads several of them (the forwarder's step).

    ``view[key]`` is what ``get_setting(key)`` returned when the view was made: same values, same defaults,
    UnknownSetting for an unregistered key. What it saves is the snapshot's freshness check, which
    ``get_setting`` makes on every read through Django's lazy settings: about ten per forwarder request,
    which added up on one-alert requests. A view is never kept past its unit of work: take a new one.
    """

    __slots__ = ("_values",)

    def __init__(self, snapshot: Snapshot) -> None:
        self._values = snapshot.values

    def __getitem__(self, key: str) -> Any:
        return self._values.get(key, get_definition(key).default)


def settings_view() -> SettingsView:
    """The current settings as a :class:`SettingsView` (one freshness check for all its reads)."""
    return SettingsView(_fresh_snapshot())


def current_snapshot() -> Snapshot:
    return _fresh_snapshot()


def _fresh_snapshot() -> Snapshot:
    state = _runtime
    snapshot = state.snapshot
    if snapshot is None or time.monotonic() - snapshot.loaded_at > settings.MUTT_CONFIG_TTL_SECONDS:
        # With a snapshot in hand, never queue behind another thread's reload (Redis may be slow to
        # answer): serve the slightly stale values and let that thread refresh them.
        if state.lock.acquire(blocking=snapshot is None):
            try:
                snapshot = state.snapshot
                if snapshot is None or time.monotonic() - snapshot.loaded_at > settings.MUTT_CONFIG_TTL_SECONDS:
                    snapshot = _reload(state)
            finally:
                state.lock.release()
        _ensure_subscriber()
    return snapshot


def reload() -> Snapshot:
    """Build a new snapshot from the best source available and install it."""
    return _reload(_runtime)


def _reload(state: _Runtime) -> Snapshot:
    """Redis's copy; if Redis lost it, the database (repairing the copy); if a source is down, the last
    snapshot, else the database, else the defaults. Never raises: readers must always get a value."""
    from configcenter import mirror

    failed_at = "redis"  # which read an exception below comes from: the first load's message says so
    try:
        values = mirror.read()
        outage.REDIS.recovered()
        source = "redis"
        if values is None:
            # The copy is lost (Redis restarted empty, or the hash was evicted) or was never made (a first
            # start): rebuild from the database.
            failed_at = "database"
            database = mirror.database_state()
            failed_at = "rebuild"
            mirror.rebuild_if_missing(database)
            values = {k: value for k, (value, _) in database.items() if value is not None}
            source = "database"
        snapshot = Snapshot(values, source)
    except Exception as exc:
        state.reload_failures += 1
        if state.snapshot is not None:
            # One line per outage, not one per reload.
            outage.warn_or_report(
                exc, logger, "settings sources unavailable (%s); keeping the last known values",
                doing="settings keep their last known values",
            )  # fmt: skip
            # Serve the last values; try again after another TTL rather than on every read.
            snapshot = Snapshot(state.snapshot.values, state.snapshot.source)
        elif failed_at == "database":
            snapshot = _defaults_without_copy(exc)
        else:
            snapshot = _from_database_or_defaults(exc)
    state.snapshot = snapshot
    return snapshot


# PostgreSQL's undefined_table: the database is reachable but not migrated yet (a first start, a migrate run).
_UNDEFINED_TABLE = "42P01"


def _defaults_without_copy(cause: Exception) -> Snapshot:
    """The first load when Redis answered without a copy of the settings and the database read failed.

    Not migrated yet is how every installation starts: nothing can be stored, so the defaults are the
    settings (INFO). A database that does not answer is an outage: the defaults serve until a reload
    (after MUTT_CONFIG_TTL_SECONDS) reads the stored values (WARNING). Neither is "Redis did not answer"."""
    if (getattr(cause.__cause__, "pgcode", None) or getattr(cause, "pgcode", None)) == _UNDEFINED_TABLE:
        logger.info("no settings stored yet (the database is not migrated); using the setting defaults")
    else:
        logger.warning(
            "Redis has no copy of the settings and the database did not answer (%s); using the setting defaults "
            "until it does", cause,
        )  # fmt: skip
    return Snapshot({}, "defaults")


def _from_database_or_defaults(cause: Exception) -> Snapshot:
    from configcenter import mirror

    try:
        database = mirror.database_state()
    except Exception:
        logger.error("neither Redis nor the database answered (%s); using setting defaults", cause)
        return Snapshot({}, "defaults")
    logger.warning("Redis unavailable for settings (%s); read them from the database", cause)
    return Snapshot({k: value for k, (value, _) in database.items() if value is not None}, "database")


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


RECONCILE_SECONDS = 60.0


def _subscribe_loop(state: _Runtime) -> None:
    from configcenter.mirror import updates_channel
    from core.redis import get_redis

    reconciled_at = time.monotonic()

    def subscribed() -> None:
        # Anything announced while we were not listening is picked up by this reload.
        _reload_from_thread(state)
        state.subscribed.set()

    def reconcile_when_due() -> None:
        nonlocal reconciled_at
        if time.monotonic() - reconciled_at > RECONCILE_SECONDS:
            reconciled_at = time.monotonic()
            _reconcile_from_thread()

    subscription.listen(
        updates_channel(), client=get_redis, stop=state.stop,
        on_message=lambda: _reload_from_thread(state), on_subscribed=subscribed,
        on_poll=reconcile_when_due, on_lost=state.subscribed.clear,
        name="settings subscription", log=logger, doing="settings changes are picked up once it is back",
    )  # fmt: skip


def _reload_from_thread(state: _Runtime) -> None:
    from django.db import connections

    try:
        with state.lock:
            _reload(state)
    finally:
        # A reload may fall back to the database; this thread must not keep a connection idle.
        connections.close_all()


def _reconcile_from_thread() -> None:
    """Republish what Redis missed (a change made while Redis was briefly down) so all processes converge."""
    from django.db import connections

    from configcenter import mirror

    try:
        mirror.reconcile()
    except Exception as exc:
        logger.warning("settings reconciliation failed (%s); retrying in a minute", exc)
    finally:
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


# A forked child (gunicorn workers) has a copy of the parent's lock and no subscriber thread: start afresh,
# once, at fork time, rather than comparing pids on every read. The copy is usually locked: the subscriber
# holds the lock for the whole of each reload. (The Redis clients, whose pool locks the subscriber holds
# briefly on every command, are renewed by core.redis's own fork hook.)
os.register_at_fork(after_in_child=_reset_after_fork)
