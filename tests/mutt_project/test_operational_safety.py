"""Operational safety nets: Redis eviction check, consumer cleanup, fail-fast connects (partitions ahead:
tests/retention)."""

from __future__ import annotations

from django.conf import settings

from core import streams
from mutt_project.checks import check_redis_eviction


def test_an_evicting_redis_is_a_deploy_error(redis_client):
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        assert [m.id for m in check_redis_eviction()] == ["mutt.E006"]
        redis_client.config_set("maxmemory-policy", "noeviction")
        assert check_redis_eviction() == []
    finally:
        redis_client.config_set("maxmemory-policy", before)


def test_a_stopping_consumer_leaves_its_group_only_when_nothing_is_pending(redis_client):
    stream = f"{settings.MUTT_REDIS_PREFIX}:test:consumers"
    redis_client.delete(stream)
    streams.ensure_group(redis_client, stream, "g")
    redis_client.xadd(stream, {"e": b"{}"})
    redis_client.xreadgroup("g", "busy", {stream: ">"}, count=1)
    redis_client.xreadgroup("g", "idle", {stream: ">"}, count=1)
    streams.forget_consumer_if_done(redis_client, stream, "g", "busy")
    streams.forget_consumer_if_done(redis_client, stream, "g", "idle")
    names = {c["name"].decode() for c in redis_client.xinfo_consumers(stream, "g")}
    assert names == {"busy"}
    redis_client.delete(stream)


def test_database_connections_fail_fast():
    options = settings.DATABASES["default"]["OPTIONS"]
    assert options["connect_timeout"] == 5
    assert options["keepalives"] == 1
