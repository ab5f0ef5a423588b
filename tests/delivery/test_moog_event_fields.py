"""What reaches Moogsoft, end to end: ingest over HTTP → alerter → forwarder → mock_moog."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.audit import Actor
from delivery.forwarder import Forwarder
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule
from tests.delivery.support import deliver_all, recorded
from tests.ingest.helpers import post
from tests.support.waiting import apply_setting

LINK_DOWN_TRAP = "1.3.6.1.6.3.1.1.5.3"
OPS = Actor.cli("ops")


def rule(**fields: Any) -> AlertRule:
    return services.create(AlertRule, actor=OPS, reason="test", **fields)


def send_through_the_pipeline(moog, client, api_keys, items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict]]:
    response = post(client, items, key=api_keys["ingest"])
    assert response.status_code == 202, response.content
    alerter = Alerter("fields")
    while alerter.step(block_ms=10):
        pass
    deliver_all(Forwarder("fields"))
    return response.json(), recorded(moog)


@pytest.fixture
def pipeline(moog):
    rule(
        name="Link down trap", match_type="oid_prefix", trap_oid=LINK_DOWN_TRAP, team_assignment="network-ops",
        severity="major",
    )  # fmt: skip
    rule(name="Interface down", match_string="changed state to down", team_assignment="network-ops")
    return moog


def test_each_event_is_its_own_moogsoft_event_with_varbinds_rule_name_and_a_description(pipeline, client, api_keys):
    items = [
        {"hostname": "sw1", "trap_oid": LINK_DOWN_TRAP, "source_type": "snmp_trap",
         "variables": {"ifIndex": 3, "ifOperStatus": 2}},
        {"hostname": "sw1", "trap_oid": LINK_DOWN_TRAP, "source_type": "snmp_trap",
         "variables": {"ifIndex": 4, "ifOperStatus": 2}},
        {"hostname": "rtr1", "message": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down"},
        {"hostname": "rtr1", "message": "%LINK-3-UPDOWN: Interface Gi0/2, changed state to down"},
    ]  # fmt: skip
    answer, events = send_through_the_pipeline(pipeline, client, api_keys, items)
    by_id = {event["external_id"]: event for event in events}
    assert sorted(by_id) == sorted(answer["event_ids"]), "external_id is the event id, one per event"
    assert {event["custom_info"]["correlation_id"] for event in events} == {answer["correlation_id"]}
    first_trap, second_trap, first_log, second_log = (by_id[event_id] for event_id in answer["event_ids"])
    assert first_trap["custom_info"]["details"] == {"varbinds": {"ifIndex": 3, "ifOperStatus": 2}}
    assert first_trap["custom_info"]["rule_name"] == "Link down trap"
    assert first_trap["description"] == f"trap {LINK_DOWN_TRAP} ifIndex=3 ifOperStatus=2", "the trap, rendered"
    assert first_log["custom_info"]["rule_name"] == "Interface down"
    assert {event["class"] for event in events} == {"network-ops"}, "the team, as in the earlier MUTT"
    # One device, two interfaces: two Moogsoft alerts.
    assert first_trap["signature"] != second_trap["signature"]
    trap_rule = first_trap["custom_info"]["rule_id"]
    assert first_trap["signature"] == f"sw1:{trap_rule}:{LINK_DOWN_TRAP}:3", "the ifIndex varbind"
    assert (first_log["signature"], second_log["signature"]) == (
        f"rtr1:{first_log['custom_info']['rule_id']}::Gi0/1", f"rtr1:{first_log['custom_info']['rule_id']}::Gi0/2",
    )  # fmt: skip


def test_class_follows_the_setting(pipeline, client, api_keys):
    apply_setting("moog_class_from", "source_type")
    item = {"hostname": "sw1", "trap_oid": LINK_DOWN_TRAP, "source_type": "snmp_trap", "variables": {"ifIndex": 3}}
    _, (event,) = send_through_the_pipeline(pipeline, client, api_keys, [item])
    assert event["class"] == "snmp_trap"


def test_a_rules_own_signature_fields_make_the_signature(moog, client, api_keys):
    rule(
        name="by name", match_type="oid_prefix", trap_oid=LINK_DOWN_TRAP, signature_fields=" hostname ,var:ifName ",
    )  # fmt: skip
    item = {"hostname": "sw1", "trap_oid": LINK_DOWN_TRAP, "variables": [{"oid": "ifName", "value": "Gi0/3"}]}
    _, (event,) = send_through_the_pipeline(moog, client, api_keys, [item])
    assert event["signature"] == "sw1:Gi0/3"
    assert AlertRule.objects.get().signature_fields == "hostname, var:ifName", "normalised when saved"


def test_an_unknown_signature_field_is_refused_naming_the_field(db):
    with pytest.raises(ValidationError) as refused:
        rule(name="bad", match_string="down", signature_fields="hostname, colour")
    assert "colour" in refused.value.message_dict["signature_fields"][0]
    assert not AlertRule.objects.exists()


def test_the_rule_tester_shows_the_signature_the_alert_will_carry(admin_client_alice):
    rule(name="Link down trap", match_type="oid_prefix", trap_oid=LINK_DOWN_TRAP)
    response = admin_client_alice.post(
        reverse("admin:rules_alertrule_tester"),
        {"hostname": "sw1", "message": "", "trap_oid": LINK_DOWN_TRAP, "syslog_severity": "",
         "variables": '{"ifIndex": 7}'},
    )  # fmt: skip
    assert response.status_code == 200
    winner = AlertRule.objects.get()
    page = response.content.decode()
    assert f'<code id="signature">sw1:{winner.pk}:{LINK_DOWN_TRAP}:7</code>' in page
    assert f"trap {LINK_DOWN_TRAP} ifIndex=7" in page
