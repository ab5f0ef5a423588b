"""Taking over the entries of a stalled alerter (rules.alerter.intake), against real Redis and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from core import contracts, streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.alerting import drain, pending
from tests.support.events import make_event, push, read_stream
from tests.support.waiting import apply_setting


@pytest.mark.django_db(transaction=True)
def test_entries_of_a_crashed_alerter_are_taken_over_exactly_once(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_claim_idle_seconds", 1)
    survivor = Alerter("survivor")
    events = [make_event() for _ in range(4)]
    push(redis_client, events)
    # "crashed": read the entries and never acknowledge them
    redis_client.xreadgroup(contracts.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=10)
    assert survivor.step(block_ms=10) == 0, "entries of a live consumer are not taken before the timeout"
    time.sleep(1.1)
    survivor.intake._last_claim = 0
    assert drain(survivor) == 4
    assert EventAuditLog.objects.count() == 4
    assert len(read_stream(redis_client, streams.alerts_stream())) == 4
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_an_entry_delivered_too_often_is_dead_lettered(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_claim_idle_seconds", 1)
    apply_setting("alerter_max_deliveries", 1)
    survivor = Alerter("next")
    push(redis_client, [make_event()])
    redis_client.xreadgroup(contracts.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=10)
    time.sleep(1.1)
    drain(survivor)
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"max_deliveries"]
    assert EventAuditLog.objects.get().handling == "dead_lettered", "audited as dead-lettered, not matched"


@pytest.mark.django_db(transaction=True)
def test_a_pending_entry_deleted_meanwhile_does_not_block_takeover(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_claim_idle_seconds", 1)
    survivor = Alerter("survivor")
    events = [make_event() for _ in range(3)]
    ids = push(redis_client, events)
    redis_client.xreadgroup(contracts.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=10)
    redis_client.xdel(streams.ingest_stream(), ids[1])
    time.sleep(1.1)
    assert drain(survivor) == 2
    assert EventAuditLog.objects.count() == 2
    assert pending(redis_client) == 0
