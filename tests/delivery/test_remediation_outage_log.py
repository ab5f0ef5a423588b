"""Remediation during a database outage: one line when it starts and one when it ends, no traceback per pass."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from configcenter.runtime import get_setting
from core import streams
from core.redis import key
from delivery.models import DlqAction
from delivery.remediation import Remediator
from tests.support.dlq_helpers import add_alerter_entry


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_one_line_not_a_traceback_per_pass(redis_client, clean_pipeline, caplog):
    redis_client.delete(key("remediation", "lock"))
    entry_id, _ = add_alerter_entry(redis_client, reason="shed")
    remediator = Remediator(client=redis_client)
    get_setting("remediation_batch_size")  # a running remediator has its settings loaded
    caplog.set_level(logging.INFO)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        for _ in range(3):
            assert remediator.step().failed == ["alerter"]
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert redis_client.xlen(streams.dlq_stream("alerter")) == 1, "nothing replayed without its audit row"
    assert remediator.step().replayed == {"alerter": 1}
    assert DlqAction.objects.get().entry_ids == [entry_id]
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in problems] == ["PostgreSQL unavailable"], caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    back = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PostgreSQL available again")]
    assert len(back) == 1


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_ends_with_the_first_good_pass_even_when_it_replays_nothing(
    redis_client, clean_pipeline, caplog
):
    redis_client.delete(key("remediation", "lock"))
    add_alerter_entry(redis_client, reason="shed")
    remediator = Remediator(client=redis_client)
    get_setting("remediation_batch_size")
    caplog.set_level(logging.INFO)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        assert remediator.step().failed == ["alerter"]
        redis_client.delete(streams.dlq_stream("alerter"))  # meanwhile an operator dealt with the entry
        assert remediator.step().failed == ["alerter"], "still down: the pass asks the database and fails"
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    result = remediator.step()
    assert (result.failed, result.replayed) == ([], {})
    back = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PostgreSQL available again")]
    assert len(back) == 1, caplog.text
    assert remediator.step().failed == []
    assert len([r for r in caplog.records if r.getMessage().startswith("PostgreSQL available again")]) == 1
