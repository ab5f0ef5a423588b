"""Operators' admin: every write path records who and why; the rule tester runs the real engine."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.audit import Actor
from rules import services
from rules.models import AlertRule, DevHost, DeviceTeam

pytestmark = pytest.mark.django_db

RULE_FORM = {
    "name": "Interface down",
    "description": "",
    "is_active": "on",
    "priority": "10",
    "match_type": "contains",
    "match_string": "changed state to down",
    "trap_oid": "",
    "syslog_severity": "",
    "prod_handling": "page_and_ticket",
    "dev_handling": "ticket_only",
    "team_assignment": "network-ops",
    "severity": "major",
}


def seed_rule(**fields):
    defaults = {"name": "seed", "match_type": "contains", "match_string": "down"}
    return services.create(AlertRule, actor=Actor.system("seed"), **{**defaults, **fields})


def test_adding_a_rule_in_the_admin_records_user_reason_and_request_id(admin_client_alice):
    response = admin_client_alice.post(
        reverse("admin:rules_alertrule_add"),
        {**RULE_FORM, "change_reason": "CHG-100 new link rule"},
        HTTP_X_REQUEST_ID="admin-req-12345",
    )
    assert response.status_code == 302, response.content[:2000]
    record = AlertRule.objects.get().history.get()
    assert (record.history_actor, record.history_change_reason, record.history_request_id) == (
        "user:alice",
        "CHG-100 new link rule",
        "admin-req-12345",
    )
    assert record.history_user.username == "alice"


def test_admin_refuses_an_invalid_regex_and_stores_nothing(admin_client_alice):
    response = admin_client_alice.post(
        reverse("admin:rules_alertrule_add"), {**RULE_FORM, "match_type": "regex", "match_string": "(broken"}
    )
    assert response.status_code == 200
    assert "Not a valid RE2 regular expression" in response.content.decode()
    assert AlertRule.objects.count() == 0


def test_editing_in_the_admin_records_old_and_new_values(admin_client_alice):
    rule = seed_rule(priority=50)
    form = {**RULE_FORM, "priority": "7", "change_reason": "raise priority"}
    response = admin_client_alice.post(reverse("admin:rules_alertrule_change", args=[rule.pk]), form)
    assert response.status_code == 302
    newest = rule.history.order_by("-history_id").first()
    changes = {c.field: (c.old, c.new) for c in newest.diff_against(newest.prev_record).changes}
    assert changes["priority"] == (50, 7)
    assert (newest.history_actor, newest.history_change_reason) == ("user:alice", "raise priority")


def test_deleting_in_the_admin_asks_for_and_records_a_reason(admin_client_alice):
    rule = seed_rule()
    url = reverse("admin:rules_alertrule_delete", args=[rule.pk])
    page = admin_client_alice.get(url)
    assert 'name="change_reason"' in page.content.decode()
    response = admin_client_alice.post(url, {"post": "yes", "change_reason": "duplicate of #3"})
    assert response.status_code == 302
    record = AlertRule.history.filter(id=rule.pk, history_type="-").get()
    assert (record.history_actor, record.history_change_reason) == ("user:alice", "duplicate of #3")


def test_bulk_deactivate_asks_for_a_reason_then_writes_one_row_per_rule(admin_client_alice):
    rules = [seed_rule(name=f"r{i}") for i in range(3)]
    url = reverse("admin:rules_alertrule_changelist")
    selection = {"action": "deactivate", "_selected_action": [r.pk for r in rules]}
    confirm = admin_client_alice.post(url, selection)
    assert confirm.status_code == 200
    assert 'name="reason"' in confirm.content.decode()
    assert AlertRule.objects.filter(is_active=True).count() == 3, "nothing changes before the reason is given"
    done = admin_client_alice.post(url, {**selection, "apply": "1", "reason": "maintenance window"})
    assert done.status_code == 302
    assert AlertRule.objects.filter(is_active=True).count() == 0
    for rule in rules:
        record = rule.history.order_by("-history_id").first()
        assert (record.history_actor, record.history_change_reason, record.is_active) == (
            "user:alice",
            "maintenance window",
            False,
        )


def test_bulk_activate_records_each_rule(admin_client_alice):
    rules = [seed_rule(name=f"r{i}", is_active=False) for i in range(2)]
    url = reverse("admin:rules_alertrule_changelist")
    admin_client_alice.post(
        url, {"action": "activate", "_selected_action": [r.pk for r in rules], "apply": "1", "reason": "back"}
    )
    assert AlertRule.objects.filter(is_active=True).count() == 2
    assert AlertRule.history.filter(history_change_reason="back").count() == 2


def test_bulk_delete_with_reason_writes_one_row_per_object(admin_client_alice):
    hosts = [services.create(DevHost, actor=Actor.system("seed"), hostname=f"lab-{i}") for i in range(2)]
    url = reverse("admin:rules_devhost_changelist")
    response = admin_client_alice.post(
        url,
        {
            "action": "delete_with_reason",
            "_selected_action": [h.pk for h in hosts],
            "apply": "1",
            "reason": "gone",
        },
    )
    assert response.status_code == 302
    assert DevHost.objects.count() == 0
    rows = DevHost.history.filter(history_type="-")
    assert sorted(rows.values_list("hostname", flat=True)) == ["lab-0", "lab-1"]
    assert set(rows.values_list("history_actor", "history_change_reason")) == {("user:alice", "gone")}


def test_bulk_action_without_a_reason_changes_nothing(admin_client_alice):
    rule = seed_rule()
    url = reverse("admin:rules_alertrule_changelist")
    response = admin_client_alice.post(
        url, {"action": "deactivate", "_selected_action": [rule.pk], "apply": "1", "reason": ""}
    )
    assert response.status_code == 200
    rule.refresh_from_db()
    assert rule.is_active


def test_history_page_shows_field_level_changes_with_actor_and_reason(admin_client_alice):
    rule = seed_rule(match_string="link down")
    services.update(rule, actor=Actor.cli("bob"), changes={"match_string": "link flapping"}, reason="widen")
    page = admin_client_alice.get(reverse("admin:rules_alertrule_history", args=[rule.pk])).content.decode()
    assert "link down" in page
    assert "link flapping" in page
    assert "cli:bob" in page
    assert "widen" in page


def test_device_team_admin_records_changes(admin_client_alice):
    response = admin_client_alice.post(
        reverse("admin:rules_deviceteam_add"),
        {"hostname": "Core-RTR-01", "team_name": "network-core", "change_reason": "new router"},
    )
    assert response.status_code == 302
    team = DeviceTeam.objects.get()
    assert team.hostname == "core-rtr-01"
    assert team.history.get().history_change_reason == "new router"


def test_changelist_filters_and_search_work(admin_client_alice):
    seed_rule(name="bgp flap", match_type="regex", match_string="BGP.*Down", team_assignment="core")
    seed_rule(name="psu", team_assignment="dc")
    url = reverse("admin:rules_alertrule_changelist")
    by_type = admin_client_alice.get(url, {"match_type__exact": "regex"}).content.decode()
    assert "bgp flap" in by_type
    assert "psu" not in by_type
    by_search = admin_client_alice.get(url, {"q": "dc"}).content.decode()
    assert "psu" in by_search
    assert "bgp flap" not in by_search


# --- rule tester ------------------------------------------------------------------------------


def run_tester(client, **fields):
    data = {"hostname": "", "message": "", "trap_oid": "", "syslog_severity": "", **fields}
    return client.post(reverse("admin:rules_alertrule_tester"), data)


def test_rule_tester_shows_winner_and_every_match_in_priority_order(admin_client_alice):
    broad = seed_rule(name="broad", match_string="down", priority=50, team_assignment="noc")
    narrow = seed_rule(
        name="narrow",
        match_type="regex",
        match_string=r"Interface \S+ changed state to down",
        priority=10,
        team_assignment="network-ops",
        prod_handling="page_only",
    )
    seed_rule(name="unrelated", match_string="power supply", priority=1)
    response = run_tester(
        admin_client_alice,
        hostname="core-rtr-01",
        message="%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
    )
    assert response.status_code == 200
    result = response.context["result"]
    assert result.environment == "prod"
    assert result.rule.id == narrow.pk
    assert (result.handling, result.team) == ("page_only", "network-ops")
    assert [r.id for r in result.matches] == [narrow.pk, broad.pk]
    page = response.content.decode()
    assert 'id="handling">page_only' in page


def test_rule_tester_uses_dev_handling_for_dev_hosts_and_device_team_fallback(admin_client_alice):
    seed_rule(name="any down", match_string="down", prod_handling="page_and_ticket", dev_handling="ignore")
    services.create(DevHost, actor=Actor.system("seed"), hostname="lab-rtr-01")
    services.create(DeviceTeam, actor=Actor.system("seed"), hostname="lab-rtr-01", team_name="lab-team")
    result = run_tester(admin_client_alice, hostname="LAB-RTR-01", message="link down").context["result"]
    assert (result.environment, result.handling, result.team) == ("dev", "ignore", "lab-team")


def test_rule_tester_matches_trap_oids_and_severity(admin_client_alice):
    oid_rule = seed_rule(name="cisco", match_type="oid_prefix", match_string="", trap_oid="1.3.6.1.4.1.9")
    seed_rule(name="sev3 only", match_string="fan", syslog_severity=3, priority=1)
    result = run_tester(
        admin_client_alice,
        hostname="sw1",
        trap_oid=".1.3.6.1.4.1.9.9.41",
        syslog_severity="4",
        message="fan tray",
    ).context["result"]
    assert result.rule.id == oid_rule.pk
    assert [r.id for r in result.matches] == [oid_rule.pk]


def test_rule_tester_reports_unhandled_events(admin_client_alice):
    seed_rule(match_string="down")
    response = run_tester(admin_client_alice, hostname="sw1", message="all good")
    assert response.context["result"].handling == "unhandled"
    assert "the event is unhandled" in response.content.decode()


def test_rule_tester_ignores_inactive_rules(admin_client_alice):
    seed_rule(match_string="down", is_active=False)
    assert run_tester(admin_client_alice, hostname="sw1", message="down").context["result"].rule is None


def test_rule_tester_is_for_staff_only(client):
    response = client.get(reverse("admin:rules_alertrule_tester"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
