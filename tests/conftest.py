"""Test-suite plumbing: real PostgreSQL and Redis, embedded unless DATABASE_URL / REDIS_URL are set.

Each run uses its own Redis key prefix (so it can share a Redis with a running MUTT or another run)
and deletes its keys at the end; pytest-django creates and drops the test database.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from mutt_project import embedded

_started: embedded.Started | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _started
    prefix = f"mutt-test-{uuid.uuid4().hex[:10]}"
    settings.MUTT_REDIS_PREFIX = prefix
    settings.CACHES["default"]["KEY_PREFIX"] = f"{prefix}:cache"
    if settings.MUTT_EMBEDDED_POSTGRES or settings.MUTT_EMBEDDED_REDIS:
        _started = embedded.start(
            Path(settings.MUTT_DATA_DIR),
            postgres=settings.MUTT_EMBEDDED_POSTGRES,
            redis=settings.MUTT_EMBEDDED_REDIS,
            durable=False,
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    from configcenter import runtime
    from core.redis import get_redis, reset_clients

    runtime.reset()  # stop the settings subscriber before its Redis goes away
    try:
        client = get_redis()
        keys = list(client.scan_iter(match=f"{settings.MUTT_REDIS_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        reset_clients()
        if _started is not None:
            # Stop only what this run started; services another process runs stay up.
            embedded.stop(_started.data_dir, postgres=_started.postgres, redis=_started.redis)


@pytest.fixture(autouse=True)
def fresh_runtime_settings():
    """Each test starts with no settings snapshot and no Redis copy of settings.

    The database is rolled back or flushed between tests, so a Redis copy written by an earlier test
    would otherwise leak its overrides into the next one.
    """
    from configcenter import mirror, runtime
    from core.redis import get_redis

    def clear() -> None:
        runtime.reset()
        get_redis().delete(mirror.values_key())

    clear()
    yield
    clear()


@pytest.fixture
def redis_client():
    from core.redis import get_redis

    return get_redis()


@pytest.fixture
def child_env(django_db_blocker) -> dict[str, str]:
    """Environment for a second OS process that must see this run's database and Redis keys."""
    from django.db import connection

    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mutt_project.settings",
            "MUTT_DATA_DIR": str(settings.MUTT_DATA_DIR),
            "MUTT_REDIS_PREFIX": settings.MUTT_REDIS_PREFIX,
            "MUTT_DATABASE_NAME": connection.settings_dict["NAME"],
            "MUTT_LOG_FORMAT": "plain",
        }
    )
    return env


@pytest.fixture
def admin_user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("alice", email="alice@example.test", password="correct horse 42")


@pytest.fixture
def admin_client_alice(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def operator_actor(admin_user):
    from core.audit import Actor

    return Actor.for_user(admin_user)


@pytest.fixture
def api_keys(db) -> dict[str, str]:
    """Raw keys by scope name, created through the service as a CLI actor."""
    from configcenter.services import create_api_key
    from core.audit import Actor

    actor = Actor.cli("test-setup")
    keys = {}
    for scope in ("admin", "write", "read", "ingest"):
        _, raw = create_api_key(actor=actor, name=f"{scope}-key", scopes=[scope], reason="test keys")
        keys[scope] = raw
    return keys


@pytest.fixture
def clean_pipeline(redis_client, transactional_db):
    """Empty pipeline streams, dedup and flood keys, and the audit log (unmanaged: flushes skip it)."""
    from django.db import connection

    from core import contracts, streams
    from core.redis import key

    names = [streams.ingest_stream(), streams.alerts_stream()] + [streams.dlq_stream(n) for n in contracts.DLQ_QUEUES]
    redis_client.delete(*names)
    for pattern in ("alerted:*", "flood:*", "ratelimit:*"):
        for name in redis_client.scan_iter(match=key(pattern)):
            redis_client.delete(name)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE rules_eventauditlog")
    yield
    redis_client.delete(*names)


@pytest.fixture
def private_tmp():
    """A temporary folder outside pytest's own (which pytest resets to mode 0700 whenever another test session
    starts, cutting off the unprivileged user an embedded PostgreSQL runs as when the tests run as root)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mutt-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _close_alerters(monkeypatch):
    """Give back the Redis connections of every alerter a test made and did not stop.

    An alerter keeps a few connections out of the shared pool (the read sent ahead, the publish and
    count scripts); a test that only steps one would leave them taken, and the pool (100 connections)
    runs dry some hundred tests later with "Too many connections" in an unrelated test.
    """
    from rules.alerter import Alerter

    made: list[Alerter] = []
    original = Alerter.__init__

    def recording_init(self, *args, **kwargs):
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Alerter, "__init__", recording_init)
    yield
    for alerter in made:
        # A test that broke its alerter on purpose: giving the connections back is all that matters here.
        with contextlib.suppress(Exception):
            alerter.close()
