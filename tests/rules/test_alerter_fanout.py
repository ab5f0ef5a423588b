"""The alerter's fan-out: every alert goes to the stream of each destination in MUTT_DESTINATIONS, in the one
publish script call, with one dedup (an event id is alerted once, to all of them); with the default (Moogsoft
alone) the stream layout is what it was before destinations existed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from core import contracts, streams
from core.audit import Actor
from core.envparse import env_names
from core.redis import key
from rules import services
from rules.alerter import Alerter
from rules.models import DeviceTeam
from tests.support.alerting import drain, pending
from tests.support.events import make_event, push, read_stream
from tests.support.waiting import apply_setting

OPS = Actor.cli("ops")
SECOND = "second"


@pytest.fixture
def fanout(redis_client, clean_pipeline) -> Iterator[tuple[str, str]]:
    """MUTT_DESTINATIONS="moog,second": the two streams every alert goes to, the second emptied around the test."""
    second = streams.destination_stream(SECOND)
    redis_client.delete(second)
    with override_settings(MUTT_DESTINATIONS=[contracts.DEFAULT_DESTINATION, SECOND]):
        yield streams.alerts_stream(), second
    redis_client.delete(second)


def ids(client, stream: str) -> list[str]:
    return [alert["event_id"] for alert in read_stream(client, stream)]


def test_moogsoft_keeps_the_alert_stream_and_any_other_destination_gets_its_own():
    assert contracts.destination_stream("moog") == contracts.ALERTS_STREAM == "stream:alerts"
    assert contracts.destination_stream("tickets") == "stream:alerts:tickets"
    assert streams.destination_stream("tickets") == key("stream", "alerts", "tickets")


@pytest.mark.django_db(transaction=True)
def test_by_default_the_alerter_writes_the_alert_stream_alone(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    assert alerter.alerts == [streams.alerts_stream()]
    keys, args = alerter.finisher._publish_calls([("bucket", "e1", b"{}")], [b"1-1"])[0]
    assert keys == [streams.alerts_stream(), streams.ingest_stream(), "bucket"]
    assert args[:5] == [1, contracts.ALERTERS_GROUP, 6 * 3600, 1, contracts.FORWARDERS_GROUP]
    alerter.stop()


@pytest.mark.django_db(transaction=True)
def test_an_alert_lands_once_on_every_destination_and_a_redelivery_on_none(redis_client, fanout, link_rule):
    moog, second = fanout
    redis_client.delete(second)  # the alerter creates a missing stream with the forwarders' group
    alerter = Alerter("a1")
    assert alerter.alerts == [moog, second]
    assert [g["name"] for g in redis_client.xinfo_groups(second)] == [contracts.FORWARDERS_GROUP.encode()]
    redis_client.delete(second)  # lost after start-up (Redis restarted empty): the publish script creates it
    event = make_event(message="Interface Gi0/1 changed state to down")
    quiet = make_event(message="nothing to see")
    push(redis_client, [event, quiet])
    drain(alerter)
    assert ids(redis_client, moog) == ids(redis_client, second) == [event["event_id"]]
    assert [g["name"] for g in redis_client.xinfo_groups(second)] == [contracts.FORWARDERS_GROUP.encode()]

    push(redis_client, [event])  # the same event again (a sender's retry, a replay): audited once, alerted once
    drain(alerter)
    alerter.stop()
    assert ids(redis_client, moog) == ids(redis_client, second) == [event["event_id"]]
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_a_flood_meta_alert_goes_to_every_destination(redis_client, fanout):
    moog, second = fanout
    apply_setting("unhandled_threshold", 5)
    services.create(DeviceTeam, actor=OPS, hostname="noisy-sw-01", team_name="campus")
    alerter = Alerter("a1")
    push(redis_client, [make_event(hostname="noisy-sw-01", message=f"port {i} flapped") for i in range(8)])
    drain(alerter)
    push(redis_client, [make_event(hostname="noisy-sw-01", message="port 99 flapped") for _ in range(5)])
    drain(alerter)
    alerter.stop()
    flooded = read_stream(redis_client, second)
    assert [(a["kind"], a["hostname"], a["team"]) for a in flooded] == [("flood", "noisy-sw-01", "campus")]
    assert read_stream(redis_client, moog) == flooded


@pytest.mark.django_db(transaction=True)
def test_load_is_shed_on_the_longest_destination_backlog(redis_client, fanout):
    moog, second = fanout
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 3)
    apply_setting("alerter_shed_mode", "dlq")
    alerter = Alerter("a1")
    for _ in range(5):  # the second destination's forwarders are behind; Moogsoft's are not
        redis_client.xadd(second, streams.encode({"event_id": "old"}))
    shedding = alerter.shedder.check()
    alerter.stop()
    assert shedding == ("dlq", "alert backlog 5 > 3")
    assert redis_client.xlen(moog) == 0


def test_destination_names_are_checked_when_read():
    assert env_names({}, "MUTT_DESTINATIONS", ["moog"]) == ["moog"]
    assert env_names({"MUTT_DESTINATIONS": " moog, tickets_2,a-b "}, "MUTT_DESTINATIONS", ["moog"]) == [
        "moog", "tickets_2", "a-b",
    ]  # fmt: skip
    for bad in ("", "moog,", "Moog", "moog,tick ets", "moog:x"):
        with pytest.raises(ImproperlyConfigured, match="MUTT_DESTINATIONS="):
            env_names({"MUTT_DESTINATIONS": bad}, "MUTT_DESTINATIONS", ["moog"])
    with pytest.raises(ImproperlyConfigured, match="more than once"):
        env_names({"MUTT_DESTINATIONS": "moog,moog"}, "MUTT_DESTINATIONS", ["moog"])


def test_an_unregistered_destination_fails_the_system_check():
    from mutt_project.checks import check_destinations

    assert check_destinations() == []
    with override_settings(MUTT_DESTINATIONS=["moog", "nowhere"]):
        (error,) = check_destinations()
    assert (error.id, "nowhere" in error.msg, "moog" in str(error.hint)) == ("mutt.E007", True, True)
