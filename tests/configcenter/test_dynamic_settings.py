"""Runtime settings: typed validation, audited changes, and reads that follow changes live."""

from __future__ import annotations

import orjson
import pytest

from configcenter import mirror, runtime, settings_service
from configcenter.models import DynamicSetting
from configcenter.registry import REGISTRY, InvalidSettingValue, UnknownSetting
from configcenter.runtime import get_setting
from core.audit import Actor
from core.context import request_id_scope
from core.redis import get_redis
from tests.support.waiting import wait_for

OPS = Actor.cli("ops")


# --- validation -----------------------------------------------------------------------------


def test_every_required_knob_is_registered_with_a_valid_default():
    required = {
        "cache_reload_interval", "ingest_max_rate", "ingest_key_max_rate", "ingest_max_queue_depth",
        "ingest_max_batch", "ingest_max_event_bytes", "alerter_batch_size", "alerter_queue_warn_threshold",
        "alerter_queue_shed_threshold", "alerter_shed_mode", "unhandled_threshold", "unhandled_window_seconds",
        "moog_rate_limit", "moog_rate_period", "moog_timeout", "moog_max_retries", "moog_retry_base_delay",
        "moog_retry_max_delay", "circuit_breaker_threshold", "circuit_breaker_timeout", "remediation_interval",
        "remediation_batch_size", "max_poison_retries", "event_retention_days", "config_audit_retention_days",
        "dlq_retention_days",
    }  # fmt: skip
    assert required <= set(REGISTRY)
    for definition in REGISTRY.values():
        assert definition.parse(definition.default) == definition.default
        assert definition.description
        assert definition.component


@pytest.mark.django_db
def test_a_value_below_the_minimum_is_refused_naming_key_and_bound():
    with pytest.raises(InvalidSettingValue) as caught:
        settings_service.set_setting("ingest_max_rate", "0", actor=OPS, reason="x")
    assert str(caught.value) == "ingest_max_rate: 0 events/s is below the minimum of 1 events/s"
    assert DynamicSetting.objects.get(key="ingest_max_rate").value is None


@pytest.mark.django_db
def test_a_value_above_the_maximum_is_refused():
    with pytest.raises(InvalidSettingValue, match="above the maximum of 300s"):
        settings_service.set_setting("moog_timeout", "10m", actor=OPS)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("alerter_batch_size", "lots", "expected a whole number"),
        ("alerter_batch_size", True, "expected a whole number, got a boolean"),
        ("alerter_batch_size", 2.5, "expected a whole number"),
        ("alerter_shed_mode", "drop", "expected one of dlq, defer"),
        ("moog_timeout", "soon", "expected a duration"),
    ],
)
def test_values_of_the_wrong_type_are_refused(key, raw, message):
    with pytest.raises(InvalidSettingValue, match=message):
        settings_service.set_setting(key, raw, actor=OPS)


@pytest.mark.django_db
def test_text_and_json_values_are_parsed_to_the_keys_type():
    assert settings_service.set_setting("moog_timeout", "250ms", actor=OPS).value == 0.25
    assert settings_service.set_setting("moog_timeout", 3, actor=OPS).value == 3.0
    assert settings_service.set_setting("alerter_batch_size", "1_000", actor=OPS).value == 1000
    assert settings_service.set_setting("alerter_shed_mode", "DLQ", actor=OPS).value == "dlq"


@pytest.mark.django_db
def test_unknown_keys_raise_everywhere():
    with pytest.raises(UnknownSetting):
        settings_service.set_setting("ingest_max_rat", 5, actor=OPS)
    with pytest.raises(UnknownSetting):
        get_setting("ingest_max_rat")


@pytest.mark.django_db
def test_related_keys_must_stay_consistent():
    with pytest.raises(InvalidSettingValue, match="must be < alerter_queue_shed_threshold"):
        settings_service.set_setting("alerter_queue_warn_threshold", 600_000, actor=OPS)
    settings_service.set_setting("moog_retry_max_delay", 5, actor=OPS)
    with pytest.raises(InvalidSettingValue, match="cannot exceed the longest"):
        settings_service.set_setting("moog_retry_base_delay", 10, actor=OPS)


# --- audit ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_set_and_unset_record_who_when_why_old_and_new():
    with request_id_scope("req-config-001"):
        settings_service.set_setting("moog_rate_limit", 80, actor=OPS, reason="Moogsoft raised our quota")
    settings_service.unset_setting("moog_rate_limit", actor=Actor.cli("alice"), reason="quota back")
    unset, changed, created = DynamicSetting.history.filter(key="moog_rate_limit").order_by("-history_id")[:3]
    assert (created.value, created.history_actor) == (None, "system:registry")
    assert (changed.history_actor, changed.history_change_reason, changed.history_request_id) == (
        "cli:ops",
        "Moogsoft raised our quota",
        "req-config-001",
    )
    assert {c.field: (c.old, c.new) for c in changed.diff_against(created).changes} == {"value": (None, 80)}
    assert {c.field: (c.old, c.new) for c in unset.diff_against(changed).changes} == {"value": (80, None)}
    assert unset.history_actor == "cli:alice"
    assert changed.history_date <= unset.history_date


@pytest.mark.django_db
def test_setting_the_same_value_again_writes_no_history():
    settings_service.set_setting("moog_rate_limit", 80, actor=OPS, reason="a")
    settings_service.set_setting("moog_rate_limit", "80", actor=OPS, reason="b")
    assert DynamicSetting.history.filter(key="moog_rate_limit").count() == 2


# --- reading --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_is_read_by_this_process_without_restart():
    assert get_setting("alerter_batch_size") == 500
    assert runtime.wait_until_subscribed()
    settings_service.set_setting("alerter_batch_size", 750, actor=OPS, reason="bigger batches")
    assert wait_for(lambda: get_setting("alerter_batch_size") == 750, timeout=1.0)
    settings_service.unset_setting("alerter_batch_size", actor=OPS, reason="back")
    assert wait_for(lambda: get_setting("alerter_batch_size") == 500, timeout=1.0)


@pytest.mark.django_db(transaction=True)
def test_redis_losing_its_copy_is_repaired_from_the_database(settings):
    settings.MUTT_CONFIG_TTL_SECONDS = 1
    settings_service.set_setting("moog_max_retries", 3, actor=OPS)
    client = get_redis()
    client.delete(mirror.values_key())
    runtime.reset()
    assert get_setting("moog_max_retries") == 3
    assert client.hexists(mirror.values_key(), mirror.MARKER)
    assert orjson.loads(client.hget(mirror.values_key(), "moog_max_retries"))["v"] == 3


@pytest.mark.django_db(transaction=True)
def test_redis_unreachable_serves_last_known_value_then_database(settings, tmp_path):
    from core.redis import reset_clients

    settings_service.set_setting("unhandled_threshold", 42, actor=OPS)
    assert get_setting("unhandled_threshold") == 42
    runtime.reset()
    assert get_setting("unhandled_threshold") == 42
    settings.REDIS_URL = f"unix://{tmp_path}/gone.sock"
    settings.MUTT_CONFIG_TTL_SECONDS = 1
    reset_clients()
    try:
        runtime._runtime.snapshot = runtime.Snapshot(
            runtime._runtime.snapshot.values, "redis", loaded_at=0.0
        )  # expired: the next read must try Redis, fail, and keep the last values
        assert get_setting("unhandled_threshold") == 42
        assert runtime.current_snapshot().source == "redis"
        runtime.reset(wait=True)
        assert get_setting("unhandled_threshold") == 42, "no snapshot and no Redis: the database answers"
        assert runtime.current_snapshot().source == "database"
    finally:
        runtime.reset()
        reset_clients()


@pytest.mark.django_db
def test_malformed_values_in_redis_are_ignored(redis_client):
    redis_client.hset(
        mirror.values_key(),
        mapping={"alerter_batch_size": b"{oops", "moog_timeout": b'{"v": -4, "ver": 1}', mirror.MARKER: b"1"},
    )
    assert get_setting("alerter_batch_size") == 500
    assert get_setting("moog_timeout") == 10.0


# --- consistency of the Redis copy (regressions found in review) ----------------------------


@pytest.mark.django_db(transaction=True)
def test_a_late_publish_of_an_older_value_does_not_roll_back(redis_client):
    settings_service.set_setting("moog_rate_limit", 60, actor=OPS)
    old_state = mirror.database_state()
    settings_service.set_setting("moog_rate_limit", 70, actor=OPS)
    mirror.publish("moog_rate_limit", old_state)  # a slow process publishing what it read earlier
    assert mirror.read()["moog_rate_limit"] == 70


@pytest.mark.django_db(transaction=True)
def test_changes_of_different_keys_do_not_erase_each_other(redis_client):
    before = mirror.database_state()
    settings_service.set_setting("moog_rate_limit", 61, actor=OPS)
    settings_service.set_setting("moog_timeout", 3, actor=OPS)
    mirror.publish("moog_max_retries", before)  # published after both, from a state read before both
    assert (mirror.read()["moog_rate_limit"], mirror.read()["moog_timeout"]) == (61, 3.0)


@pytest.mark.django_db(transaction=True)
def test_a_slow_rebuild_cannot_overwrite_a_newer_change(redis_client):
    settings_service.set_setting("moog_rate_limit", 62, actor=OPS)
    redis_client.delete(mirror.values_key())
    stale = mirror.database_state()  # a reader starts rebuilding from this
    settings_service.set_setting("moog_rate_limit", 63, actor=OPS)  # rebuilds with the newer value
    assert mirror.rebuild_if_missing(stale) is False
    assert mirror.read()["moog_rate_limit"] == 63


@pytest.mark.django_db(transaction=True)
def test_reconciliation_republishes_a_change_redis_missed(redis_client):
    settings_service.set_setting("moog_rate_limit", 64, actor=OPS)
    assert mirror.reconcile() == []
    # As if the publish of the change had been lost while the copy survived: an older version remains.
    redis_client.hset(mirror.values_key(), "moog_rate_limit", mirror.encode(None, 1))
    assert "moog_rate_limit" not in mirror.read()
    assert mirror.reconcile() == ["moog_rate_limit"]
    assert mirror.read()["moog_rate_limit"] == 64
    assert mirror.reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_with_the_copy_lost_and_the_database_down_readers_get_defaults(redis_client):
    from django.db import connection

    redis_client.delete(mirror.values_key())
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        assert get_setting("moog_rate_limit") == 50
        assert runtime.current_snapshot().source == "defaults"
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert not redis_client.hexists(mirror.values_key(), mirror.MARKER), "no marker written without the database"


_FORK_SCRIPT = """
import faulthandler, json, os, sys, threading, time, django
django.setup()
from configcenter import mirror, runtime
from configcenter.runtime import get_setting
from core import redis as mutt_redis

BUSY_FORKS, HELD_FORKS, BOUND = (int(arg) for arg in sys.argv[1:4])
parent_value = get_setting("moog_rate_limit")
assert runtime.wait_until_subscribed()
parent_state = runtime._runtime
inherited = mutt_redis.get_redis()  # a client created before the fork, as a worker object might keep
pool = inherited.connection_pool


def child():
    faulthandler.dump_traceback_later(BOUND, exit=True)  # a hang shows its stack in the test's failure
    fresh = runtime._runtime is not parent_state and runtime._runtime.thread is None
    value = get_setting("moog_rate_limit")
    inherited.ping()
    own = all(
        connection.pid == os.getpid()
        for client in (mutt_redis.get_redis(), inherited)
        for connection in client.connection_pool._available_connections
    )
    return f"{fresh}:{value}:{own}"


def fork_and_wait():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, child().encode())
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + BOUND + 2
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode() or "hung"


# The subscriber reloads on every announcement: keep it busy inside redis-py (its pool's lock is taken
# and released on every command) while forking again and again.
stop = threading.Event()


def announce():
    while not stop.is_set():
        inherited.publish(mirror.updates_channel(), "moog_rate_limit")
        time.sleep(0.001)


threading.Thread(target=announce, daemon=True).start()
outcomes, reloads = [], set()
for _ in range(BUSY_FORKS):
    reloads.add(runtime._runtime.snapshot.loaded_at)
    outcomes.append(fork_and_wait())
stop.set()

# The unlucky moment, made certain: another thread holds every lock the subscriber may hold when the fork
# happens (the runtime's own, our client registry's, the redis-py pool's and its event dispatchers').
held = [parent_state.lock, mutt_redis._lock, pool._fork_lock, pool._lock, pool._event_dispatcher._lock,
        inherited._event_dispatcher._lock]
holding, done = threading.Event(), threading.Event()


def hold():
    for lock in held:
        lock.acquire()
    holding.set()
    done.wait()
    for lock in reversed(held):
        lock.release()


holder = threading.Thread(target=hold, daemon=True)
holder.start()
assert holding.wait(5)
outcomes += [fork_and_wait() for _ in range(HELD_FORKS)]
done.set()
holder.join(5)
print(json.dumps({"parent": parent_value, "children": outcomes, "reloads": len(reloads)}))
"""

FORKS_WHILE_BUSY = 100
FORKS_WHILE_HELD = 5
CHILD_BOUND_SECONDS = 3  # redis-py gives up on a held fork lock after 5 s: a slower child is a regression


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_starts_with_its_own_settings_state(child_env):
    """As gunicorn forks workers: each child gets a fresh state (no inherited lock, thread or connection)
    and reads values promptly, even when the fork lands while the parent's subscriber is inside redis-py."""
    import json
    import subprocess
    import sys
    from collections import Counter
    from pathlib import Path

    settings_service.set_setting("moog_rate_limit", 66, actor=OPS)
    bounds = [str(n) for n in (FORKS_WHILE_BUSY, FORKS_WHILE_HELD, CHILD_BOUND_SECONDS)]
    result = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, *bounds], env=child_env, capture_output=True, text=True, timeout=120,
        cwd=str(Path(__file__).resolve().parents[2]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["parent"] == 66
    outcomes = Counter(report["children"])
    assert outcomes == {"True:66:True": FORKS_WHILE_BUSY + FORKS_WHILE_HELD}, (outcomes, result.stderr[-3000:])
    assert report["reloads"] >= 10, "the subscriber was not reloading while the children were forked"
