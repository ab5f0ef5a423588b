"""Finishing an audited batch in Redis (rules.alerter.finish): publish and acknowledge, floods, trims, and
Redis failures that leave the batch pending."""

from __future__ import annotations

import time

import pytest

from core import contracts, streams
from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.alerting import alert_ids, drain, drain_and_check_each_alerted_once, pending
from tests.support.events import make_event, push, read_stream
from tests.support.waiting import apply_setting

OPS = Actor.cli("ops")


@pytest.mark.django_db(transaction=True)
def test_a_flood_of_unmatched_events_raises_one_meta_alert_per_host_and_window(redis_client, clean_pipeline):
    apply_setting("unhandled_threshold", 5)
    from rules.models import DeviceTeam

    services.create(DeviceTeam, actor=OPS, hostname="noisy-sw-01", team_name="campus")
    alerter = Alerter("a1")
    push(
        redis_client, [make_event(hostname="noisy-sw-01", message=f"port {i} flapped on 10.0.0.{i}") for i in range(8)]
    )
    push(redis_client, [make_event(hostname="quiet-sw-01", message="odd thing") for _ in range(2)])
    drain(alerter)
    push(redis_client, [make_event(hostname="noisy-sw-01", message="port 99 flapped on 10.0.0.99") for _ in range(5)])
    drain(alerter)
    alerts = read_stream(redis_client, streams.alerts_stream())
    assert len(alerts) == 1
    meta = alerts[0]
    assert (meta["kind"], meta["hostname"], meta["team"]) == ("flood", "noisy-sw-01", "campus")
    assert meta["details"]["count"] >= 5
    assert meta["details"]["top_templates"][0]["template"] == "port <n> flapped on <ip>"
    assert EventAuditLog.objects.filter(handling="unhandled").count() == 15


def test_more_acknowledgements_than_lua_can_unpack_in_one_call(redis_client, clean_pipeline):
    alerter = Alerter("a1")
    push(redis_client, [make_event() for _ in range(9000)])
    entries = redis_client.xreadgroup(contracts.ALERTERS_GROUP, "a1", {streams.ingest_stream(): ">"}, count=9000)
    ids = [entry_id for entry_id, _ in entries[0][1]]
    assert len(ids) == 9000
    alerter.finisher.publish_and_ack([], ids)
    assert pending(redis_client) == 0
    assert redis_client.xlen(streams.ingest_stream()) == 0


@pytest.mark.django_db(transaction=True)
def test_the_backlog_counts_only_unfinished_entries(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    push(redis_client, [make_event()])
    redis_client.xreadgroup(contracts.ALERTERS_GROUP, "slow", {streams.ingest_stream(): ">"}, count=1)
    push(redis_client, [make_event() for _ in range(5)])
    drain(alerter)
    assert redis_client.xlen(streams.ingest_stream()) == 1, "finished entries leave even behind a pending one"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_a_batch_whose_alerts_fail_stays_pending_and_its_takeover_alerts_each_event_once(
    redis_client, clean_pipeline, link_rule, pipelined, alerters
):
    from prometheus_client import REGISTRY

    from rules.alerter import dedup_key

    def failures() -> float:
        return REGISTRY.get_sample_value("mutt_alerter_finish_failures_total") or 0.0

    apply_setting("alerter_claim_idle_seconds", 1)
    first = alerters("broken", pipelined=pipelined)
    events = [make_event() for _ in range(6)]
    buckets = {dedup_key(event["received_at"]) for event in events}
    for bucket in buckets:
        redis_client.set(bucket, "not a hash")  # the publish script now fails on its first alert
    push(redis_client, events)
    before = failures()
    drain(first)
    first.flush()

    assert EventAuditLog.objects.count() == 6, "the audit is committed"
    assert failures() == before + 1
    assert alert_ids(redis_client) == []
    assert pending(redis_client) == 6, "nothing acknowledged"

    redis_client.delete(*buckets)
    time.sleep(1.1)
    drain_and_check_each_alerted_once(alerters("takeover", pipelined=pipelined), redis_client, events)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_pipeline", "link_rule")
def test_flood_counts_redis_refuses_do_not_hold_back_the_alerts_and_acknowledgement(redis_client, monkeypatch, caplog):
    import redis
    from prometheus_client import REGISTRY

    def failures() -> float:
        return REGISTRY.get_sample_value("mutt_alerter_finish_failures_total") or 0.0

    alerter = Alerter("c1")
    matched, unmatched = make_event(), make_event(message="nothing explains this")
    push(redis_client, [matched, unmatched])

    def refused(*args, **kwargs):
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(alerter.finisher._count_later, "send", refused)
    before = failures()
    assert drain(alerter) == 2
    assert alert_ids(redis_client) == [matched["event_id"]]
    assert pending(redis_client) == 0, "acknowledged"
    assert failures() == before, "not counted as a batch left pending"
    assert "could not count 1 unmatched events for flood detection" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_publish_script_that_fails_halfway_marks_no_event_as_alerted(redis_client, clean_pipeline):
    import redis

    from rules.alerter import dedup_key

    alerter = Alerter("p3")
    alerts = streams.alerts_stream()
    redis_client.delete(alerts)
    redis_client.set(alerts, "not a stream")  # the script's XADD is refused
    event = make_event()
    bucket = dedup_key(event["received_at"])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        alerter.finisher.publish_and_ack([(bucket, event["event_id"], b"{}")], [])
    assert not redis_client.hexists(bucket, event["event_id"]), "a redo must not skip this alert"
    redis_client.delete(alerts)
    assert alerter.finisher.publish_and_ack([(bucket, event["event_id"], b"{}")], []) == 1
