"""A database outage under a running alerter: one line when it starts, one when it ends, whatever the retries."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from django.db import connection

from core import contracts, outage, streams
from core.redis import RotatingConnectionPool
from rules.alerter import BACKLOG_CLEAR_SECONDS, Alerter
from rules.models import EventAuditLog
from rules.services import rules_channel
from tests.support.events import make_event, push
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_logged_once_however_often_the_batch_is_retried(redis_client, clean_pipeline, caplog):
    alerter = Alerter("a1")
    alerter.refresh_rules(force=True)
    push(redis_client, [make_event() for _ in range(3)])
    caplog.set_level(logging.INFO)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        for _ in range(6):  # six retries of the held batch, and the rules reloaded meanwhile
            assert alerter.step(block_ms=10) == 0
            alerter._held.retry_at = 0
            alerter.refresh_rules(force=True)
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert alerter.step(block_ms=10) == 3
    assert EventAuditLog.objects.count() == 3
    assert redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"] == 0
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in problems] == ["PostgreSQL unavailable"], caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    back = [r.getMessage() for r in caplog.records if r.name == "mutt.outage" and r.levelno == logging.INFO]
    assert len(back) == 1
    assert back[0].startswith("PostgreSQL available again after ")


@pytest.mark.django_db(transaction=True)
def test_a_redis_outage_another_thread_saw_end_is_not_reported_again_by_the_next_step(tmp_path, caplog):
    # The flap an operator saw: "Redis available again" (the rule listener subscribed again), then at once
    # "Redis unavailable (Broken pipe)" from the main loop, whose read connection, kept since before the
    # outage, was never used while Redis was down (each step failed earlier, on the backlog check).
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_pool(RotatingConnectionPool.from_url(server.url))
    alerter = Alerter("a1", client=client)

    def unit() -> bool:
        """One pass of the worker loop (core.worker): an outage is reported, a success ends it."""
        try:
            alerter.step(block_ms=10)
        except redis.RedisError as exc:
            reporter = outage.reporter_for(exc)
            if reporter is None:  # not taken for an outage: the test has found something else
                raise
            reporter.failed(exc)
            return False
        outage.REDIS.recovered()
        return True

    try:
        alerter.refresh_rules(force=True)
        outage.REDIS.recovered()  # whatever an earlier test left
        alerter.start_rule_listener()
        assert wait_for(lambda: unit() and client.pubsub_numsub(rules_channel())[0][1] == 1)
        caplog.set_level(logging.INFO, logger="mutt.outage")
        redis.Redis(unix_socket_path=str(server.socket)).shutdown(save=True)
        assert server.process is not None
        server.process.wait(timeout=10)
        time.sleep(BACKLOG_CLEAR_SECONDS)  # the next step asks Redis for the alert backlog before it reads
        assert not unit()
        assert not unit()
        server.start()
        assert wait_for(lambda: "Redis available again" in caplog.text, timeout=10), "the listener is back"
        assert unit(), "the step after the outage reads on a new connection"
        assert unit()
    finally:
        alerter.close()
        if alerter._listener is not None:
            alerter._listener.join(timeout=5)
        client.close()
        server.stop()
    messages = [r.getMessage().split(" (")[0].split(" after ")[0] for r in caplog.records if r.name == "mutt.outage"]
    assert messages == ["Redis unavailable", "Redis available again"], caplog.text
