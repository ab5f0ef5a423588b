"""Rate limits, backpressure and the stream: what one Redis script decides for each request."""

from __future__ import annotations

import threading
from collections import Counter

import orjson
import pytest
from django.db import connections
from django.test import Client

from configcenter import runtime, settings_service
from configcenter.models import ApiKey
from configcenter.registry import InvalidSettingValue
from core import contracts, streams
from core.redis import reset_clients
from ingest import ratelimit
from tests.ingest.conftest import OPS
from tests.ingest.helpers import event, post, stream_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db


def bucket_state(redis_client, name: str) -> dict[bytes, bytes]:
    return redis_client.hgetall(name)


def ingest_bucket(redis_client) -> dict[bytes, bytes]:
    return bucket_state(redis_client, ratelimit.key_bucket(ApiKey.objects.get(name="ingest-key").prefix))


def fill_stream(redis_client, count: int) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(streams.ingest_stream(), streams.encode({"filler": n}))
    pipe.execute()


# --- rate limits ------------------------------------------------------------------------------


def test_a_key_over_its_rate_gets_429_with_retry_after_and_nothing_queued(
    client, ingest_key, runtime_settings, redis_client
):
    runtime_settings(ingest_key_max_rate=1)
    assert post(client, [event(0)], key=ingest_key).status_code == 202
    response = post(client, [event(1)], key=ingest_key)
    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    assert response.json() == {
        "detail": "Rate limit of 1 events/s for API key 'ingest-key' (ingest_key_max_rate) exceeded; "
        "nothing was accepted. Retry after 1 s.",
        "limit": "key",
        "retry_after": 1,
    }
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000"]


def test_other_keys_have_their_own_bucket_but_share_the_global_one(client, api_keys, runtime_settings):
    runtime_settings(ingest_key_max_rate=1)
    assert post(client, [event()], key=api_keys["ingest"]).status_code == 202
    assert post(client, [event()], key=api_keys["ingest"]).status_code == 429
    assert post(client, [event()], key=api_keys["admin"]).status_code == 202

    runtime_settings(ingest_key_max_rate=1000, ingest_max_rate=1)
    assert post(client, [event()], key=api_keys["admin"]).status_code == 202  # the global bucket was full
    response = post(client, [event()], key=api_keys["ingest"])
    assert response.status_code == 429
    assert response.json()["limit"] == "global"
    assert response.json()["detail"].startswith("Rate limit of 1 events/s for all senders (ingest_max_rate)")


def test_a_batch_larger_than_the_rate_borrows_and_the_debt_sets_retry_after(client, ingest_key, runtime_settings):
    runtime_settings(ingest_key_max_rate=1)
    # A full bucket holds one token: enough to admit a batch of any size, which leaves a debt of 19.
    assert post(client, [event(n) for n in range(20)], key=ingest_key).status_code == 202
    refused = post(client, [event()], key=ingest_key)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "20"


def test_retry_after_follows_a_rate_change_without_restart(client, ingest_key, runtime_settings):
    runtime_settings(ingest_key_max_rate=1)
    assert post(client, [event(n) for n in range(20)], key=ingest_key).status_code == 202
    assert post(client, [event()], key=ingest_key)["Retry-After"] == "20"
    runtime_settings(ingest_key_max_rate=4)  # the same debt refills four times faster
    assert post(client, [event()], key=ingest_key)["Retry-After"] == "5"
    runtime_settings(ingest_key_max_rate=50_000)
    assert post(client, [event()], key=ingest_key).status_code == 202


def test_refused_requests_spend_no_tokens(client, api_keys, runtime_settings, redis_client):
    runtime_settings(ingest_max_event_bytes=256, ingest_max_batch=2)
    ingest_key = api_keys["ingest"]
    refusals = [
        (post(client, [event()], key=None), 401),
        (post(client, [event()], key="mutt_deadbeef_wrong"), 401),
        (post(client, [event()], key=api_keys["read"]), 403),
        (post(client, b"{oops", key=ingest_key), 400),
        (post(client, b"", key=ingest_key), 400),
        (post(client, [event()], key=ingest_key, content_type="text/html"), 415),
        (post(client, [event(n) for n in range(3)], key=ingest_key), 413),
        (post(client, [event(0, message="x" * 300)], key=ingest_key), 413),
        (post(client, [{"hostname": "only"}], key=ingest_key), 422),
    ]
    assert [response.status_code for response, _ in refusals] == [status for _, status in refusals]
    assert list(redis_client.scan_iter(match=ratelimit.key_bucket("*"))) == []
    assert not redis_client.exists(ratelimit.global_bucket())


def test_429_and_503_leave_the_buckets_as_they_were(client, ingest_key, runtime_settings, redis_client):
    runtime_settings(ingest_key_max_rate=1)
    assert post(client, [event(n) for n in range(5)], key=ingest_key).status_code == 202
    before = ingest_bucket(redis_client), bucket_state(redis_client, ratelimit.global_bucket())
    assert before[0][b"tokens"] == b"-4"
    assert post(client, [event()], key=ingest_key).status_code == 429
    runtime_settings(ingest_key_max_rate=50_000, ingest_max_batch=1000, ingest_max_queue_depth=1000)
    fill_stream(redis_client, 1000)
    before = ingest_bucket(redis_client), bucket_state(redis_client, ratelimit.global_bucket())
    assert post(client, [event()], key=ingest_key).status_code == 503
    assert (ingest_bucket(redis_client), bucket_state(redis_client, ratelimit.global_bucket())) == before


def test_idle_buckets_expire_once_they_would_be_full_again(client, ingest_key, runtime_settings, redis_client):
    runtime_settings(ingest_key_max_rate=10, ingest_max_rate=1000)
    assert post(client, [event(n) for n in range(30)], key=ingest_key).status_code == 202
    key_bucket = ratelimit.key_bucket(ApiKey.objects.get(name="ingest-key").prefix)
    # 10 - 30 = -20 tokens: full again after 3 s at 10/s; the key lives one second more.
    assert 3900 <= redis_client.pttl(key_bucket) <= 4000
    assert 1000 <= redis_client.pttl(ratelimit.global_bucket()) <= 1031


# --- backpressure -----------------------------------------------------------------------------


def test_a_full_queue_gets_503_with_retry_after_and_debits_nothing(client, ingest_key, runtime_settings, redis_client):
    runtime_settings(ingest_max_batch=1000, ingest_max_queue_depth=1000)
    fill_stream(redis_client, 995)
    response = post(client, [event(n) for n in range(10)], key=ingest_key)
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.json() == {
        "detail": "The ingest queue cannot take 10 more events (995 waiting; ingest_max_queue_depth is 1000); "
        "nothing was accepted. Retry after 2 s.",
        "retry_after": 2,
        "backlog": 995,
    }
    assert redis_client.xlen(streams.ingest_stream()) == 995
    assert ingest_bucket(redis_client) == {}
    assert post(client, [event(n) for n in range(5)], key=ingest_key).status_code == 202  # fits exactly
    assert redis_client.xlen(streams.ingest_stream()) == 1000
    assert post(client, [event()], key=ingest_key).status_code == 503
    runtime_settings(ingest_max_queue_depth=2000)
    assert post(client, [event()], key=ingest_key).status_code == 202


def test_ingest_max_batch_may_not_exceed_the_queue_depth(runtime_settings):
    why = "a batch larger than the queue could never be accepted"
    with pytest.raises(InvalidSettingValue) as refused:
        runtime_settings(ingest_max_queue_depth=4999)
    assert str(refused.value) == (
        f"ingest_max_queue_depth: ingest_max_batch (5000) must be ≤ ingest_max_queue_depth (4999): {why}"
    )
    runtime_settings(ingest_max_queue_depth=5000)
    with pytest.raises(InvalidSettingValue, match=why):
        runtime_settings(ingest_max_batch=5001)


def test_a_batch_larger_than_the_queue_itself_is_413_not_503_forever(client, ingest_key, redis_client):
    # The relation above guards new changes; values stored before it existed can still disagree.
    settings_service.publish_overrides({"ingest_max_batch": 1500, "ingest_max_queue_depth": 1000})
    runtime.reload()
    try:
        response = post(client, [event(n) for n in range(1001)] + [{"hostname": "no message"}], key=ingest_key)
    finally:
        settings_service.publish_overrides({})
        runtime.reload()
    assert response.status_code == 413
    assert "Retry-After" not in response
    assert response.json() == {
        "detail": "The batch has 1001 valid events but ingest_max_queue_depth is 1000, so it could never be "
        "accepted; nothing was accepted. Send batches of at most 1000 events.",
        "max_queue_depth": 1000,
        "received": 1001,
    }
    assert redis_client.xlen(streams.ingest_stream()) == 0
    assert ingest_bucket(redis_client) == {}


@pytest.mark.django_db(transaction=True)
def test_a_depth_change_reaches_ingest_through_the_settings_subscriber(client, ingest_key, redis_client, live_settings):
    fill_stream(redis_client, 1000)
    assert post(client, [event()], key=ingest_key).status_code == 202
    assert runtime.wait_until_subscribed()
    settings_service.set_setting("ingest_max_batch", 1000, actor=OPS, reason="fit batches in the smaller queue")
    settings_service.set_setting("ingest_max_queue_depth", 1000, actor=OPS, reason="protect the alerters")
    assert wait_for(lambda: post(client, [event()], key=ingest_key).status_code == 503, timeout=2.0)
    settings_service.unset_setting("ingest_max_queue_depth", actor=OPS, reason="back to normal")
    settings_service.unset_setting("ingest_max_batch", actor=OPS, reason="back to normal")
    assert wait_for(lambda: post(client, [event()], key=ingest_key).status_code == 202, timeout=2.0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_never_push_the_queue_past_its_depth(ingest_key, runtime_settings, redis_client):
    runtime_settings(ingest_max_batch=1000, ingest_max_queue_depth=1000)
    warm = post(Client(), [event()], key=ingest_key)  # the key is cached; the threads need no database
    assert warm.status_code == 202
    batch = 25
    statuses: Counter[int] = Counter()
    event_ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def sender(worker: int) -> None:
        client = Client()
        try:
            start.wait()
            for round_ in range(200):
                response = post(
                    client, [event(worker * 1000 + round_ * batch + n) for n in range(batch)], key=ingest_key
                )
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 202:
                        event_ids.extend(response.json()["event_ids"])
                if response.status_code == 503:
                    return
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    depth = redis_client.xlen(streams.ingest_stream())
    assert set(statuses) == {202, 503}
    assert statuses[503] == 16
    assert 1000 - batch < depth <= 1000
    assert depth == 1 + len(event_ids) == 1 + len(set(event_ids))
    assert sorted(e["event_id"] for e in stream_events(redis_client)[1:]) == sorted(event_ids)


# --- the stream -------------------------------------------------------------------------------


def test_events_wait_for_the_alerters_group_even_before_an_alerter_runs(client, ingest_key, redis_client):
    stream = streams.ingest_stream()
    assert post(client, [event(0), event(1)], key=ingest_key).status_code == 202
    assert [g["name"] for g in redis_client.xinfo_groups(stream)] == [contracts.ALERTERS_GROUP.encode()]
    redis_client.delete(stream)  # e.g. Redis restarted empty while this process kept running
    assert post(client, [event(2)], key=ingest_key).status_code == 202
    [[_, entries]] = redis_client.xreadgroup(contracts.ALERTERS_GROUP, "alerter-1", {stream: ">"}, count=10)
    assert [streams.decode(fields)["hostname"] for _, fields in entries] == ["edge-002"]


def test_entries_use_the_shared_stream_encoding(client, ingest_key, redis_client):
    assert post(client, [event(7)], key=ingest_key).status_code == 202
    [(_, fields)] = redis_client.xrange(streams.ingest_stream())
    assert set(fields) == {contracts.PAYLOAD_FIELD}
    assert orjson.loads(fields[contracts.PAYLOAD_FIELD])["hostname"] == "edge-007"


def test_redis_down_is_503_and_nothing_is_accepted(client, ingest_key, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    reset_clients()
    try:
        response = post(client, [event()], key=ingest_key)
    finally:
        reset_clients()
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "detail": "The event queue (Redis) is unavailable; nothing was accepted. Retry later.",
        "retry_after": 5,
    }


def test_the_script_returns_the_entry_ids_and_the_backlog(redis_client):
    limits = ratelimit.Limits(global_rate=1000, key_rate=1000, max_depth=1000)
    payloads = [orjson.dumps({"n": n}) for n in range(3)]
    admission = ratelimit.admit(redis_client, rate_key="abc123", payloads=payloads, limits=limits)
    assert admission.outcome is ratelimit.Outcome.ACCEPTED
    assert admission.backlog == 3
    assert list(admission.entry_ids) == [
        entry_id.decode() for entry_id, _ in redis_client.xrange(streams.ingest_stream())
    ]
    full = ratelimit.admit(redis_client, rate_key="abc123", payloads=payloads * 400, limits=limits)
    assert (full.outcome, full.backlog, full.retry_after, full.entry_ids) == (ratelimit.Outcome.BACKPRESSURE, 3, 2, ())
