"""Ingest refusals the client caused or can retry are logged at WARNING, never at ERROR."""

from __future__ import annotations

import logging

import pytest

from core import streams
from core.redis import reset_clients
from tests.ingest.helpers import event, post


def request_log(caplog) -> list[tuple[str, int]]:
    """(level, status) of each line Django's request logger wrote."""
    return [(r.levelname, r.status_code) for r in caplog.records if r.name == "django.request"]


def test_a_backpressure_refusal_is_a_warning(client, ingest_key, runtime_settings, redis_client, caplog):
    runtime_settings(ingest_max_batch=1000, ingest_max_queue_depth=1000)
    pipe = redis_client.pipeline(transaction=False)
    for n in range(1000):
        pipe.xadd(streams.ingest_stream(), streams.encode({"n": n}))
    pipe.execute()
    caplog.set_level(logging.INFO)
    assert post(client, [event()], key=ingest_key).status_code == 503
    assert request_log(caplog) == [("WARNING", 503)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_redis_unavailable_is_a_warning(client, ingest_key, settings, tmp_path, caplog):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    reset_clients()
    caplog.set_level(logging.INFO)
    try:
        assert post(client, [event()], key=ingest_key).status_code == 503
    finally:
        reset_clients()
    assert request_log(caplog) == [("WARNING", 503)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("case", [([{"hostname": ""}], "ingest", 422), ([], None, 401), (b"{not json", "ingest", 400)])
def test_client_errors_are_warnings(client, api_keys, caplog, case):
    body, key, status = case
    caplog.set_level(logging.INFO)
    assert post(client, body, key=api_keys.get(key) if key else None).status_code == status
    assert request_log(caplog) == [("WARNING", status)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
