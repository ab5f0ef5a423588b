"""The forwarder creates the forwarders' group again when Redis lost it (restarted empty) and the alert
stream came back without it (a replay, a retry coming due): alerts added meanwhile are delivered."""

from __future__ import annotations

import logging

from core import streams
from delivery.lanes import Lanes
from tests.delivery.support import recorded
from tests.support.events import make_alert, push_alerts
from tests.support.waiting import apply_setting, wait_for


def test_a_lost_group_is_created_again_and_the_alerts_added_meanwhile_are_delivered(moog, redis_client, caplog):
    apply_setting("forwarder_concurrency", 1)
    lanes = Lanes("f1")
    try:
        assert lanes.step(block_ms=10) == 0
        redis_client.delete(streams.alerts_stream())
        alerts = [make_alert(signature=f"h:{n}:") for n in range(3)]
        push_alerts(redis_client, alerts)  # XADD alone: the stream is back, its group is not
        caplog.set_level(logging.INFO)
        assert lanes.step(block_ms=10) == 0  # the gate's read found no group: created again
        assert wait_for(lambda: (lanes.step(block_ms=10), len(recorded(moog)) >= 3)[1], timeout=15)
    finally:
        lanes.close()
    assert sorted(event["custom_info"]["event_id"] for event in recorded(moog)) == sorted(
        alert["event_id"] for alert in alerts
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "consumer group forwarders of" in warnings[0].getMessage()
