"""Ingest tests run against the real Redis and PostgreSQL, each with an empty stream and full buckets."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from core.audit import Actor
from tests.support.runtime_settings import changing_settings

OPS = Actor.cli("ingest-tests")


@pytest.fixture(autouse=True)
def clean_ingest(redis_client) -> Iterator[None]:
    """No ingest stream, no rate-limit buckets, no remembered API keys, before and after each test."""
    from core import streams
    from core.redis import key
    from ingest import ratelimit
    from ingest.auth import key_cache

    def clean() -> None:
        redis_client.delete(streams.ingest_stream())
        buckets = list(redis_client.scan_iter(match=key("ratelimit", "*")))
        if buckets:
            redis_client.delete(*buckets)
        ratelimit.forget_ensured_groups()
        key_cache.clear()

    clean()
    yield
    clean()


@pytest.fixture(autouse=True)
def settings_without_subscriber(request, monkeypatch) -> None:
    """Ingest tests make settings changes visible with an explicit reload (``runtime_settings``), so
    the subscriber thread is not started: stopping it costs up to a second per test at teardown.
    Tests that use ``live_settings`` get the real subscriber (its propagation is tested in configcenter).
    """
    if "live_settings" in request.fixturenames:
        return
    from configcenter import runtime

    monkeypatch.setattr(runtime, "_ensure_subscriber", lambda: None)


@pytest.fixture
def live_settings() -> None:
    """Marker fixture: keep the settings subscriber thread (see ``settings_without_subscriber``)."""


@pytest.fixture
def runtime_settings(db, django_capture_on_commit_callbacks) -> Iterator[Callable[..., None]]:
    """``runtime_settings(ingest_max_rate=5)`` changes settings through the service, as an operator
    would, and makes this process read them at once; the defaults are back after the test."""
    with changing_settings(django_capture_on_commit_callbacks, OPS, "ingest test") as change:
        yield change


@pytest.fixture
def ingest_key(api_keys) -> str:
    return api_keys["ingest"]
