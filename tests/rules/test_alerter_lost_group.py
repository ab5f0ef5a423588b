"""The alerter creates the alerters' group again when Redis lost it (restarted empty), from the start of the
stream: events added before the group was back (by ingest, or a replay from the DLQ) are processed."""

from __future__ import annotations

import logging

import pytest

from core import streams
from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, EventAuditLog
from tests.support.events import make_event, push, read_stream


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.django_db(transaction=True)
def test_a_lost_group_is_created_again_and_the_events_added_meanwhile_are_processed(
    redis_client, clean_pipeline, caplog, pipelined
):
    services.create(
        AlertRule, actor=Actor.cli("ops"), name="down", match_type="contains", match_string="changed state to down",
        team_assignment="network-ops",
    )  # fmt: skip
    alerter = Alerter("a1", pipelined=pipelined)
    try:
        assert alerter.step(block_ms=10) == 0
        # Redis restarted empty: no stream, no group. Then events come in on a stream without the group.
        redis_client.delete(streams.ingest_stream())
        events = [make_event(message=f"Interface Gi0/{n}, changed state to down") for n in range(3)]
        push(redis_client, events)
        caplog.set_level(logging.INFO)
        assert alerter.step(block_ms=10) == 0  # the read found no group: created again
        done = 0
        for _ in range(10):
            done += alerter.step(block_ms=10)
        alerter.flush()
    finally:
        alerter.stop()
    assert done == 3
    audited = set(EventAuditLog.objects.values_list("event_id", flat=True))
    assert {str(e) for e in audited} == {event["event_id"] for event in events}
    alerted = {alert["event_id"] for alert in read_stream(redis_client, streams.alerts_stream())}
    assert alerted == {event["event_id"] for event in events}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "consumer group alerters of" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
