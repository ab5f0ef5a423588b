"""Development hosts and device teams are exact names or glob patterns: an exact name beats every
pattern, among patterns the most literal characters win, then the oldest entry; the tester says which
entry decided."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.engine import RuleSet, RuleSpec
from rules.models import AlertRule, DevHost, DeviceTeam, EventAuditLog
from tests.support.events import make_event, push

OPS = Actor.cli("ops")
DOWN = RuleSpec(id=1, priority=10, match_type="contains", match_string="down", dev_handling="ignore")


def test_a_glob_dev_host_makes_every_matching_host_dev() -> None:
    rules = RuleSet.compile([DOWN], dev_hosts=["*.lab.example.net", "lab-*"])
    for host in ("lab-rtr-01.lab.example.net", "LAB-RTR-01", "lab-", "x.lab.example.net"):
        assert rules.match(host, "down").environment == "dev", host
        assert rules.decide(host, "down")[2] == "ignore", host
    for host in ("lab.example.net", "xlab-1", "rtr-01.lab.example.net.evil", "core-rtr-01"):
        assert rules.match(host, "down").environment == "prod", host


def test_question_mark_stands_for_exactly_one_character() -> None:
    rules = RuleSet.compile([], dev_hosts=["sw?.lab"])
    assert rules.environment_of("sw1.lab") == "dev"
    assert rules.environment_of("sw12.lab") == "prod"
    assert rules.environment_of("sw.lab") == "prod"


def test_exact_name_beats_glob_and_the_most_specific_glob_wins_then_the_oldest() -> None:
    teams = [
        ("*", "everyone"),  # refused by validation, but the engine still ranks it last
        ("*.example.net", "example"),
        ("*.lab.example.net", "lab"),
        ("lab-rtr-01.lab.example.net", "exact"),
        ("*-rtr-??.lab.example.net", "routers"),  # 21 literal characters: more than "*.lab.example.net" (16)
        ("lab-*.example.net", "tie-older"),  # 16 literal characters, like the next one
        ("*ab-x.example.net", "tie-newer"),
    ]
    rules = RuleSet.compile([], device_teams=teams)
    assert rules.team_of("lab-rtr-01.lab.example.net") == "exact"
    assert rules.team_of("lab-rtr-02.lab.example.net") == "routers"
    assert rules.team_of("fw1.lab.example.net") == "lab"
    assert rules.team_of("lab-sw.lab.example.net") == "lab"  # 16 literal characters each: the older entry
    assert rules.team_of("lab-x.example.net") == "tie-older"
    assert rules.team_of("core.example.net") == "example"
    assert rules.team_of("elsewhere.org") == "everyone"
    result = rules.match("lab-rtr-02.lab.example.net", "down")
    assert (result.team, result.team_entry) == ("routers", "*-rtr-??.lab.example.net")


def test_a_mapping_of_exact_names_still_works() -> None:
    rules = RuleSet.compile([DOWN], dev_hosts=["lab1"], device_teams={"R1": "network"})
    assert rules.match("LAB1", "down").dev_entry == "lab1"
    assert rules.team_of("r1") == "network"


@pytest.mark.django_db
def test_host_entries_accept_globs_and_refuse_patterns_matching_every_host(operator_actor):
    services.create(DevHost, actor=operator_actor, hostname="*.LAB.example.net")
    assert DevHost.objects.get().hostname == "*.lab.example.net"
    services.create(DeviceTeam, actor=operator_actor, hostname="lab-?", team_name="lab")
    for pattern in ("*", "*?*", "lab *", "lab/*"):
        with pytest.raises(ValidationError) as refused:
            services.create(DevHost, actor=operator_actor, hostname=pattern)
        assert "hostname" in refused.value.message_dict, pattern
    for model in (DevHost, DeviceTeam):
        help_text = model._meta.get_field("hostname").help_text
        assert "'*.lab.example.net', 'lab-*'" in help_text
        assert "An exact name beats every pattern" in help_text


@pytest.mark.django_db(transaction=True)
def test_the_alerter_uses_dev_handling_for_a_host_a_glob_matches(redis_client, clean_pipeline):
    services.create(
        AlertRule, actor=OPS, name="down", match_string="down", prod_handling="page_and_ticket", dev_handling="ignore"
    )
    services.create(DevHost, actor=OPS, hostname="*.lab.example.net")
    services.create(DeviceTeam, actor=OPS, hostname="*.lab.example.net", team_name="lab")
    lab = make_event(hostname="lab-rtr-01.lab.example.net", message="link down")
    prod = make_event(hostname="core-rtr-01", message="link down")
    push(redis_client, [lab, prod])
    alerter = Alerter("globs-1")
    for _ in range(10):
        if not alerter.step(block_ms=10):
            break
    rows = {str(row.event_id): row for row in EventAuditLog.objects.all()}
    assert (rows[lab["event_id"]].environment, rows[lab["event_id"]].handling) == ("dev", "ignore")
    assert rows[lab["event_id"]].team == "lab"
    assert (rows[prod["event_id"]].environment, rows[prod["event_id"]].handling) == ("prod", "page_and_ticket")


@pytest.mark.django_db
def test_the_tester_shows_which_entry_decided_environment_and_team(admin_client_alice, operator_actor):
    services.create(AlertRule, actor=operator_actor, name="down", match_string="down")
    services.create(DevHost, actor=operator_actor, hostname="*.lab.example.net")
    services.create(DeviceTeam, actor=operator_actor, hostname="*.example.net", team_name="core")
    services.create(DeviceTeam, actor=operator_actor, hostname="lab-*", team_name="lab")
    url = reverse("admin:rules_alertrule_tester")
    response = admin_client_alice.post(url, {"hostname": "lab-rtr-01.lab.example.net", "message": "down"})
    result = response.context["result"]
    assert (result.environment, result.dev_entry, result.team, result.team_entry) == (
        "dev",
        "*.lab.example.net",
        "core",
        "*.example.net",
    )
    page = response.content.decode()
    assert 'id="dev-entry">development host entry <code>*.lab.example.net</code> matches' in page
    assert 'id="team-source">device team entry <code>*.example.net</code>' in page
    prod = admin_client_alice.post(url, {"hostname": "core-rtr-01", "message": "down"}).content.decode()
    assert 'id="dev-entry">no development host entry matches' in prod


def test_globs_are_still_matched_in_precedence_order_when_the_set_gives_up() -> None:
    class GaveUp:  # what RE2's set answers when its DFA runs out of memory
        def Match(self, data: bytes) -> list[int]:
            return []

    rules = RuleSet.compile([], device_teams=[("*.example.net", "example"), ("*.lab.example.net", "lab")])
    rules._device_teams._set = GaveUp()
    assert rules.team_of("fw1.lab.example.net") == "lab"
    assert rules.team_of("fw1.example.net") == "example"
    assert rules.team_of("fw1.example.org") == ""
