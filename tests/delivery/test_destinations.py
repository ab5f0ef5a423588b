"""A second destination next to Moogsoft: a module's worth of code and a registration, delivered to by the same
forwarder with state of its own (breaker, retries, DLQ, idempotency records), over real HTTP and real Redis, and
fed by the alerter once named in MUTT_DESTINATIONS."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from prometheus_client import REGISTRY

from configcenter.runtime import SettingsView
from core import streams
from core.audit import Actor
from delivery.breaker import CLOSED, OPEN, CircuitBreaker
from delivery.destinations import (
    Destination,
    PayloadError,
    Request,
    UnknownDestination,
    destinations,
    get_destination,
    register,
    unregister,
)
from delivery.destinations.moogsoft import MOOGSOFT
from delivery.forwarder import Forwarder
from delivery.lanes import Lanes
from delivery.ratelimit import SharedRateLimit
from delivery.retry import schedule_key
from delivery.status import COLLECTOR, read_state
from devtools.mock_moog import MockMoog
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule
from tests.delivery.support import deliver_all, recorded
from tests.support.alerting import drain
from tests.support.events import make_alert, make_event, push, push_alerts
from tests.support.waiting import apply_setting, wait_for


class Second(Destination):
    """A test-only destination: a JSON array of small objects, no credential, Moogsoft's settings."""

    name = "test-second"
    title = "Second"
    setting_keys = MOOGSOFT.setting_keys

    def __init__(self, url: str) -> None:
        self._url = url
        self.calls: Counter[str] = Counter()  # how often the forwarder called each method

    def url(self, settings: SettingsView) -> str:
        self.calls["url"] += 1
        return self._url

    def build(self, alerts: Sequence[Mapping[str, Any]], settings: SettingsView) -> Request:
        self.calls["build"] += 1
        if any(not alert.get("hostname") for alert in alerts):
            raise PayloadError("an alert without a hostname")
        body = [{"id": alert["event_id"], "host": alert["hostname"], "text": alert["description"]} for alert in alerts]
        return Request(orjson.dumps(body), {"Content-Type": "application/json"})


@pytest.fixture
def second(moog, redis_client) -> Iterator[tuple[Second, MockMoog]]:
    """The second destination, registered, posting to a mock of its own; Moogsoft's mock is ``moog``."""
    server = MockMoog().start()
    destination = register(Second(f"{server.url}/second"))
    state = [
        destination.stream(),
        destination.dlq_stream(),
        destination.inflight_key(),
        CircuitBreaker(redis_client, destination.name).key,
        SharedRateLimit(redis_client, destination.name).key,
        schedule_key(destination.name),
    ]
    redis_client.delete(*state)
    yield destination, server
    unregister(destination.name)
    server.close()
    redis_client.delete(*state)
    for name in redis_client.scan_iter(match=f"{destination.delivered_prefix()}*"):
        redis_client.delete(name)


def push_to(client: Any, destination: Destination, alerts: list[dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for alert in alerts:
        pipe.xadd(destination.stream(), streams.encode(alert))
    pipe.execute()


def retries(destination: str) -> float:
    return REGISTRY.get_sample_value("mutt_forwarder_retries_scheduled_total", {"destination": destination}) or 0.0


def stream_alerts(client: Any, destination: Destination) -> list[dict[str, Any]]:
    return [streams.decode(fields) for _, fields in client.xrange(destination.stream())]


def test_the_registry_knows_moogsoft_and_the_registered_destination(second):
    destination, _ = second
    assert get_destination() is MOOGSOFT
    assert get_destination("test-second") is destination
    assert [d.name for d in destinations()] == ["moog", "test-second"]
    with pytest.raises(ValueError, match="already registered"):
        register(Second("http://127.0.0.1:9/"))
    with pytest.raises(UnknownDestination, match="nowhere"):
        get_destination("nowhere")


def test_a_second_destination_gets_its_alerts_with_its_own_breaker_and_retries(moog, second, redis_client):
    destination, other = second
    apply_setting("circuit_breaker_threshold", 2)
    apply_setting("circuit_breaker_timeout", 1)
    apply_setting("moog_batch_size", 2)
    alerts = [make_alert(signature=f"h:{i}:") for i in range(6)]
    push_alerts(redis_client, alerts)
    push_to(redis_client, destination, alerts)
    other.configure(status=503)  # the second destination is down; Moogsoft is not
    retried_before = retries("test-second")
    to_moog, to_second = Forwarder("moog-1"), Forwarder("second-1", destination="test-second")
    assert (to_second.stream, to_second.dlq) == (destination.stream(), destination.dlq_stream())
    assert wait_for(lambda: to_second.step(block_ms=10) == 0 and to_second.breaker.snapshot().state == OPEN, 10)
    deliver_all(to_moog)

    assert sorted(e["custom_info"]["event_id"] for e in recorded(moog)) == sorted(a["event_id"] for a in alerts)
    assert recorded(other) == [], "the second destination's outage held its alerts, and only its"
    assert (CircuitBreaker(redis_client).snapshot().state, to_second.breaker.snapshot().state) == (CLOSED, OPEN)
    # Its failed requests were retried through its own schedule (released into its own stream since).
    assert retries("test-second") - retried_before >= 4
    assert redis_client.zcard(schedule_key()) == 0
    waiting = stream_alerts(redis_client, destination)
    assert len(waiting) + redis_client.zcard(schedule_key(destination.name)) == len(alerts), "all held, none lost"
    assert (read_state(redis_client).breaker_state, read_state(redis_client, "test-second").breaker_state) == (
        CLOSED, OPEN,
    )  # fmt: skip

    other.configure(reset=True)  # back: the probe after circuit_breaker_timeout closes its breaker again
    deliver_all(to_second, timeout=30)
    assert sorted(e["id"] for e in recorded(other)) == sorted(a["event_id"] for a in alerts)
    assert to_second.breaker.snapshot().state == CLOSED
    for alert in alerts:  # one idempotency record per destination
        assert redis_client.exists(MOOGSOFT.delivered_key(alert["event_id"]))
        assert redis_client.exists(destination.delivered_key(alert["event_id"]))
    # One body and one URL per request, never one call per alert (the forwarder binds them once).
    assert destination.calls["build"] == destination.calls["url"] == other.state.requests
    to_moog.close()
    to_second.close()


def test_dead_letters_go_to_the_destinations_own_dlq(second, redis_client):
    destination, other = second
    alerts = [make_alert(signature="h:1:"), make_alert(hostname=""), make_alert(signature="h:2:")]
    push_to(redis_client, destination, alerts)
    forwarder = Forwarder("second-1", destination=destination)
    deliver_all(forwarder)
    assert [e["id"] for e in recorded(other)] == [alerts[0]["event_id"], alerts[2]["event_id"]]
    (entry,) = redis_client.xrange(destination.dlq_stream())
    assert (entry[1][b"reason"], entry[1][b"event_id"].decode()) == (b"malformed", alerts[1]["event_id"])
    assert redis_client.xlen(MOOGSOFT.dlq_stream()) == 0
    assert read_state(redis_client, "test-second").dlq_depth == 1
    forwarder.close()


def test_lanes_and_run_forwarder_serve_the_named_destination(second):
    destination, _ = second
    apply_setting("forwarder_concurrency", 3)
    lanes = Lanes("lanes", destination="test-second")
    try:
        lanes.adjust()
        forwarders = [lanes.first, *(lane.forwarder for lane in lanes._running)]
        assert len(forwarders) == 3
        assert {f.destination for f in forwarders} == {destination}
    finally:
        lanes.close()
    with pytest.raises(CommandError, match="no destination named 'nowhere'"):
        call_command("run_forwarder", destination="nowhere", until_idle=True)


def test_a_forwarders_metrics_describe_its_own_destination(second, monkeypatch):
    monkeypatch.setattr(COLLECTOR, "destination", COLLECTOR.destination)  # put back after the test
    call_command("run_forwarder", destination="test-second", until_idle=True)
    breaker = REGISTRY.get_sample_value("mutt_forwarder_breaker_state", {"destination": "test-second"})
    assert breaker is not None, "the forwarder of test-second exported Moogsoft's breaker as its own"


def test_an_alert_the_alerter_raises_is_delivered_to_every_configured_destination(moog, second, redis_client):
    destination, other = second
    services.create(
        AlertRule, actor=Actor.cli("ops"), name="link down", match_type="contains",
        match_string="changed state to down", priority=10, team_assignment="network-ops", severity="major",
        dev_handling="ignore",
    )  # fmt: skip
    event = make_event(message="Interface Gi0/1 changed state to down")
    with override_settings(MUTT_DESTINATIONS=["moog", destination.name]):
        alerter = Alerter("fanout-1")
        push(redis_client, [event])
        drain(alerter)
        alerter.stop()
    to_moog, to_second = Forwarder("moog-1"), Forwarder("second-1", destination=destination.name)
    deliver_all(to_moog)
    deliver_all(to_second)
    assert [e["custom_info"]["event_id"] for e in recorded(moog)] == [event["event_id"]]
    assert [(e["id"], e["host"]) for e in recorded(other)] == [(event["event_id"], event["hostname"])]
    to_moog.close()
    to_second.close()
