"""Redis restarted empty (no AOF, or a failover to an empty replica) loses the streams' consumer groups. The
alerter and the forwarder, as real processes, create their group again (one WARNING each, no traceback per
read) and deliver events that come in afterwards."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from core import streams
from core.audit import Actor
from devtools.mock_moog import MockMoog
from rules import services
from rules.models import AlertRule, EventAuditLog
from tests.e2e.test_outage_logging import lines, start, stop, text
from tests.support.events import make_event
from tests.support.redis_server import RedisServer
from tests.support.waiting import apply_setting, wait_for

LINK_DOWN = "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down"


def delivered(moog: MockMoog, marker: str) -> bool:
    return any(marker in str(record["event"]) for record in moog.events())


def push(client: redis.Redis, marker: str) -> str:
    event = make_event(message=f"{LINK_DOWN} {marker}")
    client.xadd(streams.ingest_stream(), streams.encode(event))  # as a replay would: no group created with it
    return event["event_id"]


@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_the_alerter_and_the_forwarder_recreate_their_groups_after_redis_restarted_empty(
    clean_pipeline, child_env, tmp_path
):
    services.create(
        AlertRule, actor=Actor.cli("ops"), name="down", match_type="contains", match_string="changed state to down",
        team_assignment="network-ops",
    )  # fmt: skip
    moog = MockMoog().start()
    apply_setting("moog_url", f"{moog.url}/events")  # in the database: the workers read it from there
    server = RedisServer(tmp_path / "redis").start()
    env = {**child_env, "REDIS_URL": server.url, "MUTT_ALERTER_METRICS_PORT": "0", "MUTT_FORWARDER_METRICS_PORT": "0"}
    logs = {name: tmp_path / f"{name}.log" for name in ("run_alerter", "run_forwarder")}
    workers = [start(name, env, log) for name, log in logs.items()]
    client = None
    try:
        for name, log in logs.items():
            assert wait_for(lambda log=log: "started" in text(log), timeout=60), f"{name}: {text(log)}"
        client = redis.Redis(unix_socket_path=str(server.socket))
        before = f"before-{uuid.uuid4().hex[:8]}"
        push(client, before)
        assert wait_for(lambda: delivered(moog, before), timeout=30), text(logs["run_forwarder"])

        client.shutdown(nosave=True)  # no persistence: it comes back empty, groups and all
        server.process.wait(timeout=10)
        server.start()
        # Each finds its group gone by itself: the forwarder before any alert is published (the alerter's
        # publish script would create the forwarders' group, as it does for a new alert stream).
        forwarder_log = logs["run_forwarder"]
        assert wait_for(lambda: lines(forwarder_log, "consumer group forwarders of"), timeout=30), text(forwarder_log)
        client = redis.Redis(unix_socket_path=str(server.socket))
        after = f"after-{uuid.uuid4().hex[:8]}"
        event_id = push(client, after)
        assert wait_for(lambda: delivered(moog, after), timeout=60), (
            f"{text(logs['run_alerter'])}\n{text(logs['run_forwarder'])}"
        )
        assert EventAuditLog.objects.filter(event_id=event_id, handling="page_and_ticket").count() == 1
        time.sleep(3)  # several reads of every loop: none may fail any more
    finally:
        for worker in workers:
            stop(worker)
        if client is not None:
            client.close()
        server.stop()
        moog.close()
    alerter, forwarder = text(logs["run_alerter"]), text(logs["run_forwarder"])
    for output in (alerter, forwarder):
        assert "Traceback" not in output, output
        assert "NOGROUP" not in output, output
    assert len(lines(logs["run_alerter"], "consumer group alerters of")) == 1, alerter
    assert "was missing" in lines(logs["run_alerter"], "consumer group alerters of")[0]
    recreated = lines(logs["run_forwarder"], "consumer group forwarders of")
    assert 1 <= len(recreated) <= 3, forwarder  # one per lane at most (forwarder_concurrency 3) that saw it gone
    assert all(" WARNING " in line for line in recreated)
