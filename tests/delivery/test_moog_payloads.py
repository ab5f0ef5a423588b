"""MUTT alerts become Moogsoft REST/Webhook LAM events and Cloud Events API events, field by field."""

from __future__ import annotations

import base64
import logging
import socket
from typing import Any

import orjson
import pytest

from core.contracts import Alert
from delivery.destinations import PayloadError
from delivery.destinations import moogsoft_events as payloads
from delivery.destinations.moogsoft import auth_headers
from delivery.destinations.moogsoft_events import build_request, build_requests, to_cloud_event, to_webhook_event
from rules.flood import Flood, meta_alert

EVENT_TIME = "2026-11-26T10:15:30.250000+00:00"
EPOCH = 1795688130  # EVENT_TIME in whole seconds


def rule_alert(**overrides: Any) -> dict[str, Any]:
    """A rule alert exactly as ``rules.alerter`` queues it."""
    alert = {
        "kind": "rule",
        "event_id": "0b7e6c1a-3f7e-4a3c-9d55-2a2b9e4c1f00",
        "correlation_id": "c0ffee00c0ffee00c0ffee00c0ffee00",
        "hostname": "core-rtr-01",
        "rule_id": 42,
        "rule_name": "Interface down",
        "team": "netops",
        "severity": "major",
        "handling": "page_and_ticket",
        "environment": "prod",
        "description": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "event_time": EVENT_TIME,
        "trap_oid": "1.3.6.1.6.3.1.1.5.3",
        "source_type": "snmp_trap",
        "signature": "core-rtr-01:42:1.3.6.1.6.3.1.1.5.3",
    }
    alert.update(overrides)
    return alert


def flood_alert() -> Alert:
    flood = Flood("edge-sw-07", 1795688100, 300, 250, [("port <n> flapping", 200), ("fan <n> slow", 50)], "port 3 flap")
    return meta_alert(flood, team="network-ops", received_at=EVENT_TIME)


def test_a_rule_alert_maps_to_a_webhook_lam_event():
    assert to_webhook_event(rule_alert(), location="mutt-pod-1") == {
        "signature": "core-rtr-01:42:1.3.6.1.6.3.1.1.5.3",
        "source_id": "core-rtr-01",
        "external_id": "0b7e6c1a-3f7e-4a3c-9d55-2a2b9e4c1f00",  # the event id: one per event, not per request
        "manager": "MUTT",
        "source": "core-rtr-01",
        "class": "netops",  # the team, as in the earlier MUTT (setting moog_class_from)
        "agent": "MUTT",
        "agent_location": "mutt-pod-1",
        "type": "rule-42",
        "severity": 4,
        "description": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "agent_time": EPOCH,
        "custom_info": {
            "team": "netops",
            "handling": "page_and_ticket",
            "environment": "prod",
            "rule_id": 42,
            "rule_name": "Interface down",
            "trap_oid": "1.3.6.1.6.3.1.1.5.3",
            "event_id": "0b7e6c1a-3f7e-4a3c-9d55-2a2b9e4c1f00",
            "correlation_id": "c0ffee00c0ffee00c0ffee00c0ffee00",
            "details": {},
            "resent": False,
        },
    }


def test_a_rule_alert_maps_to_a_cloud_events_api_event():
    assert to_cloud_event(rule_alert()) == {
        "source": "core-rtr-01",
        "check": "rule-42",
        "severity": "major",
        "description": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "dedupe_key": "core-rtr-01:42:1.3.6.1.6.3.1.1.5.3",
        "time": EPOCH,
        "class": "netops",
        "manager": "MUTT",
        "tags": {
            "team": "netops",
            "environment": "prod",
            "handling": "page_and_ticket",
            "rule_id": "42",
            "rule_name": "Interface down",
            "event_id": "0b7e6c1a-3f7e-4a3c-9d55-2a2b9e4c1f00",
            "correlation_id": "c0ffee00c0ffee00c0ffee00c0ffee00",
            "trap_oid": "1.3.6.1.6.3.1.1.5.3",
        },
    }


def test_a_flood_meta_alert_maps_to_both_formats():
    alert = flood_alert()
    flood_id = alert["event_id"]
    assert to_webhook_event(alert, location="mutt-pod-1") == {
        "signature": "edge-sw-07::unmatched-flood",
        "source_id": "edge-sw-07",
        "external_id": flood_id,
        "manager": "MUTT",
        "source": "edge-sw-07",
        "class": "network-ops",
        "agent": "MUTT",
        "agent_location": "mutt-pod-1",
        "type": "unmatched-flood",
        "severity": 2,
        "description": "250 unmatched events from edge-sw-07 in 300s; top: 200 x port <n> flapping; 50 x fan <n> slow",
        "agent_time": EPOCH,
        "custom_info": {
            "team": "network-ops",
            "handling": "page_and_ticket",
            "environment": "",
            "rule_id": None,
            "rule_name": "",
            "trap_oid": "",
            "event_id": flood_id,
            "correlation_id": flood_id,
            "details": {
                "window_start": 1795688100,
                "count": 250,
                "top_templates": [
                    {"template": "port <n> flapping", "count": 200},
                    {"template": "fan <n> slow", "count": 50},
                ],
                "sample": "port 3 flap",
            },
            "resent": False,
        },
    }
    assert to_cloud_event(alert) == {
        "source": "edge-sw-07",
        "check": "unmatched-flood",
        "severity": "warning",
        "description": "250 unmatched events from edge-sw-07 in 300s; top: 200 x port <n> flapping; 50 x fan <n> slow",
        "dedupe_key": "edge-sw-07::unmatched-flood",
        "time": EPOCH,
        "class": "network-ops",
        "manager": "MUTT",
        # No rule, no OID, no environment: those tags are left out rather than sent empty.
        "tags": {
            "team": "network-ops",
            "handling": "page_and_ticket",
            "event_id": flood_id,
            "correlation_id": flood_id,
        },
    }


@pytest.mark.parametrize(
    ("severity", "level", "cloud"),
    [
        ("clear", 0, "clear"),
        ("indeterminate", 1, "unknown"),
        ("warning", 2, "warning"),
        ("minor", 3, "minor"),
        ("major", 4, "major"),
        ("critical", 5, "critical"),
    ],
)
def test_every_severity_maps_to_moogsofts_scale(severity, level, cloud):
    alert = rule_alert(severity=severity)
    assert to_webhook_event(alert)["severity"] == level
    assert to_cloud_event(alert)["severity"] == cloud


@pytest.mark.parametrize("severity", ["", None, "CRITICAL-ish", "info"])
def test_an_unknown_severity_is_sent_as_indeterminate_not_dropped(severity):
    alert = rule_alert(severity=severity)
    assert to_webhook_event(alert)["severity"] == 1
    assert to_cloud_event(alert)["severity"] == "unknown"


def test_severity_names_are_case_insensitive():
    assert to_webhook_event(rule_alert(severity="Critical"))["severity"] == 5


@pytest.mark.parametrize(
    ("event_time", "epoch"),
    [
        ("2026-11-26T10:15:30Z", 1795688130),
        ("2026-11-26T12:15:30.999+02:00", 1795688130),
        ("2026-11-26T10:15:30", 1795688130),  # no offset: UTC
        ("2026-11-26t10:15:30z", 1795688130),
    ],
)
def test_event_time_becomes_whole_epoch_seconds(event_time, epoch):
    alert = rule_alert(event_time=event_time)
    assert to_webhook_event(alert)["agent_time"] == epoch
    assert to_cloud_event(alert)["time"] == epoch


def test_an_alert_without_correlation_id_is_traced_by_its_event_id():
    alert = rule_alert(correlation_id="")
    assert to_webhook_event(alert)["external_id"] == alert["event_id"]
    assert to_cloud_event(alert)["tags"]["correlation_id"] == alert["event_id"]


def test_class_is_the_team_or_the_source_type_as_the_setting_says():
    assert to_webhook_event(rule_alert())["class"] == "netops"
    assert to_webhook_event(rule_alert(), class_from="source_type")["class"] == "snmp_trap"
    assert to_cloud_event(rule_alert(), class_from="source_type")["class"] == "snmp_trap"
    assert to_webhook_event(rule_alert(team=""))["class"] == "network"
    assert to_webhook_event(rule_alert(source_type=""), class_from="source_type")["class"] == "network"


def test_each_event_of_a_batch_has_its_own_external_id_and_trap_varbinds_reach_the_details():
    varbinds = {"1.3.6.1.2.1.2.2.1.1.3": 3, "ifOperStatus": 2}
    first = rule_alert(event_id="e-1", details={"varbinds": varbinds})
    second = rule_alert(event_id="e-2")  # same request (correlation id), another event
    body = orjson.loads(build_request([first, second], "webhook").body)
    assert [event["external_id"] for event in body["events"]] == ["e-1", "e-2"]
    assert body["events"][0]["custom_info"]["details"] == {"varbinds": varbinds}
    tags = to_cloud_event(first)["tags"]
    assert (tags["varbind.1.3.6.1.2.1.2.2.1.1.3"], tags["varbind.ifOperStatus"]) == ("3", "2")


def test_a_description_is_never_empty():
    assert to_webhook_event(rule_alert(description=""))["description"] == "Interface down"
    assert to_cloud_event(rule_alert(description="", rule_name=""))["description"] == "rule-42"


def test_the_agent_location_defaults_to_this_host(monkeypatch):
    payloads.agent_location.cache_clear()
    monkeypatch.setattr(socket, "gethostname", lambda: "mutt-web-7f9c")
    try:
        assert to_webhook_event(rule_alert())["agent_location"] == "mutt-web-7f9c"
    finally:
        payloads.agent_location.cache_clear()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hostname": ""}, "has no hostname"),
        ({"signature": None}, "has no signature"),
        ({"event_time": "yesterday"}, "event_time that is not ISO 8601"),
    ],
)
def test_an_alert_missing_what_moogsoft_needs_is_a_payload_error_naming_it(change, message):
    with pytest.raises(PayloadError, match=message) as raised:
        build_request([rule_alert(**change)], "webhook")
    assert rule_alert()["event_id"] in str(raised.value)


def test_an_alert_without_event_id_is_a_payload_error():
    with pytest.raises(PayloadError, match="no event_id"):
        to_cloud_event(rule_alert(event_id=""))


def test_a_webhook_request_carries_the_events_under_events():
    alerts = [rule_alert(event_id=f"id-{n}", severity="minor") for n in range(3)]
    request = build_request(alerts, "webhook")
    body = orjson.loads(request.body)
    assert list(body) == ["events"]
    assert [event["custom_info"]["event_id"] for event in body["events"]] == ["id-0", "id-1", "id-2"]
    assert body["events"][0] == to_webhook_event(alerts[0])
    assert request.format == "webhook"
    assert request.event_ids == ("id-0", "id-1", "id-2")
    assert request.count == 3
    assert request.headers == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": payloads.USER_AGENT,
    }


def test_an_events_api_request_is_a_json_array():
    alerts = [rule_alert(event_id="a"), flood_alert()]
    request = build_request(alerts, "events_api")
    assert orjson.loads(request.body) == [to_cloud_event(alerts[0]), to_cloud_event(alerts[1])]
    assert request.event_ids == ("a", alerts[1]["event_id"])


def test_an_unknown_format_or_an_empty_batch_is_refused():
    with pytest.raises(ValueError, match="unknown Moogsoft format 'xml'"):
        build_request([rule_alert()], "xml")
    with pytest.raises(ValueError, match="at least one alert"):
        build_request([], "webhook")


@pytest.mark.parametrize("fmt", ["webhook", "events_api"])
def test_alerts_are_batched_up_to_the_batch_size(fmt):
    alerts = [rule_alert(event_id=f"id-{n}") for n in range(120)]
    requests = build_requests(alerts, fmt, batch_size=50)
    assert [r.count for r in requests] == [50, 50, 20]
    assert [i for r in requests for i in r.event_ids] == [f"id-{n}" for n in range(120)]


@pytest.mark.django_db(transaction=True)
def test_the_batch_size_comes_from_the_moog_batch_size_setting():
    from tests.support.waiting import apply_setting

    apply_setting("moog_batch_size", 7)
    requests = build_requests([rule_alert(event_id=f"id-{n}") for n in range(15)], "webhook")
    assert [r.count for r in requests] == [7, 7, 1]


# --- authentication ---------------------------------------------------------------------------------


@pytest.fixture
def moog_key(settings):
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_CURRENT": "cur-Zq8#key", "MOOG_API_KEY_NEXT": "next-Vw2!key"}


def test_the_events_api_authenticates_with_the_current_api_key(moog_key):
    assert auth_headers("events_api") == {"apiKey": "cur-Zq8#key"}


def test_the_webhook_authenticates_with_basic_auth_as_user_mutt(moog_key):
    assert auth_headers("webhook") == {"Authorization": "Basic " + base64.b64encode(b"mutt:cur-Zq8#key").decode()}


def test_a_webhook_key_of_user_and_password_sets_both(settings):
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY": "lam-user:s3cr:et"}
    token = auth_headers("webhook")["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(token) == b"lam-user:s3cr:et"


def test_a_rotated_key_can_be_used_explicitly_after_a_401(moog_key):
    from core.secrets import get_credential

    assert auth_headers("events_api", get_credential("MOOG_API_KEY").next) == {"apiKey": "next-Vw2!key"}


def test_only_a_next_key_is_used_when_there_is_no_current(settings):
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_NEXT": "next-only"}
    assert auth_headers("events_api") == {"apiKey": "next-only"}


def test_without_a_key_no_auth_header_is_sent(settings):
    settings.MUTT_SECRETS_ENV = {}
    assert auth_headers("events_api") == {}
    assert auth_headers("webhook") == {}


def test_auth_headers_never_show_the_key_when_printed_or_logged(moog_key, caplog):
    headers = auth_headers("events_api")
    with caplog.at_level(logging.INFO):
        logging.getLogger("mutt.test").info("sending with %s", headers)
    for text in (repr(headers), str(headers), f"{headers}", caplog.text):
        assert "cur-Zq8#key" not in text
    assert repr(headers) == "{'apiKey': '***'}"


def test_request_bodies_and_headers_never_carry_the_key(moog_key):
    for fmt in ("webhook", "events_api"):
        request = build_request([rule_alert()], fmt)
        assert b"cur-Zq8#key" not in request.body
        assert "cur-Zq8#key" not in str(request.headers.values())
