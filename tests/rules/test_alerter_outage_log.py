"""A database outage under a running alerter: one line when it starts, one when it ends, whatever the retries."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from mutt_project import streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.events import make_event, push


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
    assert redis_client.xpending(streams.ingest_stream(), streams.ALERTERS_GROUP)["pending"] == 0
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in problems] == ["PostgreSQL unavailable"], caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    back = [r.getMessage() for r in caplog.records if r.name == "mutt.outage" and r.levelno == logging.INFO]
    assert len(back) == 1
    assert back[0].startswith("PostgreSQL available again after ")
