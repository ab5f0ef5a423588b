"""Pipelined mode (run_alerter): a batch is finished while the next one is audited."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from core import contracts, streams
from tests.support.alerting import alert_ids, audited_ids, drain, drain_and_check_each_alerted_once, pending
from tests.support.events import make_event, push
from tests.support.waiting import apply_setting


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_batch_is_audited_while_the_next_is_evaluated_and_finished_a_turn_later(
    redis_client, clean_pipeline, link_rule, alerters
):
    apply_setting("alerter_batch_size", 10)
    alerter = alerters("p1", pipelined=True)
    events = [make_event() for _ in range(40)]
    ids = [e["event_id"] for e in events]
    push(redis_client, events)

    assert alerter.step(block_ms=0) == 10, "evaluated and handed to the audit writer"
    assert alert_ids(redis_client) == []
    assert pending(redis_client) == 20, "the next batch is read ahead"
    assert not alerter.idle

    assert alerter.step(block_ms=0) == 10
    assert set(ids[:10]) <= audited_ids(), "the first batch's audit is committed once the second is evaluated"
    assert alert_ids(redis_client) == [], "its alerts wait for the next turn"
    assert pending(redis_client) == 30

    assert alerter.step(block_ms=0) == 10
    assert set(ids[:20]) <= audited_ids()
    assert alert_ids(redis_client) == ids[:10], "alerted and acknowledged only after its audit committed"
    assert pending(redis_client) == 30, "the first batch is acknowledged"

    assert alerter.step(block_ms=0) == 10
    assert alert_ids(redis_client) == ids[:20]
    started = time.monotonic()
    assert alerter.step(block_ms=5000) == 0
    assert time.monotonic() - started < 2.5, "nothing more: the batches in hand are finished without blocking"
    assert alert_ids(redis_client) == ids
    assert pending(redis_client) == 0
    assert alerter.idle
    assert audited_ids() == set(ids)


@pytest.mark.django_db(transaction=True)
def test_pipelined_stop_finishes_the_batch_in_hand(redis_client, clean_pipeline, link_rule, alerters):
    alerter = alerters("p2", pipelined=True)
    push(redis_client, [make_event() for _ in range(5)])
    assert alerter.step(block_ms=0) == 5
    assert pending(redis_client) == 5
    alerter.stop()
    assert len(alert_ids(redis_client)) == 5
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_database_outage_holds_every_batch_in_hand_and_takes_no_more_until_it_ends(
    redis_client, clean_pipeline, link_rule, alerters
):
    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p7", pipelined=True)
    events = [make_event() for _ in range(30)]
    ids = [e["event_id"] for e in events]
    push(redis_client, events[:5])
    drain(alerter)
    assert audited_ids() == set(ids[:5]), "the writer thread has its own connection open"
    push(redis_client, events[5:])

    saved = dict(connection.settings_dict)
    with connection.cursor() as cursor:  # PostgreSQL ends every other session: the writer's too
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})  # and is unreachable
    try:
        assert alerter.step(block_ms=10) == 5, "evaluated and handed to the writer; the next batch read ahead"
        assert alerter.step(block_ms=10) == 0, "the audit failed: nothing more is taken"
        held = alerter._held
        assert held is not None
        assert sorted(streams.decode(fields)["event_id"] for _, fields in held.entries) == sorted(ids[5:20]), (
            "held: the batch the writer had, the one evaluated behind it, and the one read ahead"
        )
        assert pending(redis_client) == 15, "nothing of them is acknowledged"
        assert alert_ids(redis_client) == ids[:5]

        for attempt in (2, 3):
            alerter._held.retry_at = 0
            assert alerter.step(block_ms=10) == 0
            assert alerter._held is not None, "still down: held again"
            assert alerter._held.attempts == attempt
            assert len(alerter._held.entries) == 15, "retried where it is: nothing new read meanwhile"
            assert pending(redis_client) == 15
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    alerter._held.retry_at = 0
    drain(alerter)
    alerter.flush()
    assert audited_ids() == set(ids)
    assert sorted(alert_ids(redis_client)) == sorted(ids), "each event alerted once"
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_stop_also_finishes_the_entries_read_ahead(redis_client, clean_pipeline, link_rule, alerters):
    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p8", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    assert alerter.step(block_ms=0) == 5
    assert pending(redis_client) == 10, "one batch in the writer, the next read ahead"
    alerter.stop()
    assert audited_ids() == {e["event_id"] for e in events}
    assert sorted(alert_ids(redis_client)) == sorted(e["event_id"] for e in events)
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_read_ahead_redis_refuses_is_made_when_its_turn_comes(
    redis_client, clean_pipeline, link_rule, alerters, caplog
):
    import redis

    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p9", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    send = alerter.intake._reader.send
    calls = []

    def second_send_fails(*command):
        calls.append(command)
        if len(calls) == 2:
            raise redis.ConnectionError("connection lost")
        send(*command)

    alerter.intake._reader.send = second_send_fails
    assert alerter.step(block_ms=0) == 5, "the batch taken goes on"
    assert "could not read the next batch ahead" in caplog.text
    drain(alerter)
    alerter.stop()
    assert audited_ids() == {e["event_id"] for e in events}
    assert sorted(alert_ids(redis_client)) == sorted(e["event_id"] for e in events)
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_failure_while_the_next_batch_starts_still_finishes_the_previous_one(
    redis_client, clean_pipeline, link_rule, monkeypatch, alerters
):
    import redis

    apply_setting("alerter_batch_size", 5)
    apply_setting("alerter_claim_idle_seconds", 1)
    alerter = alerters("p4", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    # A crashed alerter took the first half; the second half is read by ours.
    redis_client.xreadgroup(contracts.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=5)
    assert alerter.step(block_ms=0) == 5
    assert pending(redis_client) == 10, "our batch is handed to the writer, not yet acknowledged"

    time.sleep(1.1)
    alerter.intake._last_claim = 0
    calls = []

    def lost_connection(*args, **kwargs):  # Redis unreachable for the takeover's delivery counts
        calls.append(1)
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(alerter.client, "xpending_range", lost_connection)
    with pytest.raises(redis.ConnectionError):
        alerter.step(block_ms=0)  # takes the crashed alerter's entries over, then fails on them
    assert calls, "the takeover was attempted"
    assert alert_ids(redis_client) == [e["event_id"] for e in events[5:]], "the previous batch was still finished"
    assert pending(redis_client) == 5

    monkeypatch.undo()
    time.sleep(1.1)
    alerter.intake._last_claim = 0
    drain_and_check_each_alerted_once(alerter, redis_client, events)
