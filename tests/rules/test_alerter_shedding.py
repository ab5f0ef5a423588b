"""Load shedding (rules.alerter.shedding): the step stops consuming while the alert backlog is too long."""

from __future__ import annotations

import time

import pytest

from core import streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.alerting import audited_ids, pending
from tests.support.events import make_event, push
from tests.support.waiting import apply_setting


@pytest.mark.django_db(transaction=True)
def test_load_shedding_moves_oldest_entries_to_the_dlq_in_dlq_mode(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 5)
    for _ in range(6):
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    push(redis_client, [make_event() for _ in range(3)])
    alerter = Alerter("a1")
    assert alerter.step(block_ms=10) == 0, "deferring by default: nothing consumed"
    assert redis_client.xlen(streams.ingest_stream()) == 3
    apply_setting("alerter_shed_mode", "dlq")
    alerter.step(block_ms=10)
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"shed"] * 3
    assert b"alert backlog 6 > 5" in dlq[0][1][b"error"]
    assert pending(redis_client) == 0
    rows = EventAuditLog.objects.all()
    assert [(r.handling, r.dead_letter_reason) for r in rows] == [("dead_lettered", "shed: alert backlog 6 > 5")] * 3


@pytest.mark.django_db(transaction=True)
def test_shedding_with_an_empty_ingest_stream_does_not_block(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 3)
    apply_setting("alerter_shed_mode", "dlq")
    for _ in range(5):
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    alerter = Alerter("a1")
    started = time.monotonic()
    assert alerter.step(block_ms=10) == 0
    assert time.monotonic() - started < 2


@pytest.mark.django_db(transaction=True)
def test_pipelined_deferring_finishes_the_entries_already_read_ahead_then_takes_no_more(
    redis_client, clean_pipeline, link_rule, alerters
):
    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p10", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    assert alerter.step(block_ms=0) == 5
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 5)
    for _ in range(50):  # the alert backlog is now far above the shed threshold (defer mode)
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    time.sleep(0.15)  # past the time a clear backlog is trusted

    assert alerter.step(block_ms=0) == 5, "the batch read ahead is this alerter's: finished, not left unread"
    assert alerter.step(block_ms=0) == 0
    assert alerter.idle
    assert audited_ids() == {e["event_id"] for e in events}
    assert pending(redis_client) == 0
    push(redis_client, [make_event() for _ in range(3)])
    assert alerter.step(block_ms=0) == 0, "deferring: nothing new is consumed"
    assert redis_client.xlen(streams.ingest_stream()) == 3
