"""Empty messages (ADR-007): regex rules are tried on them, contains rules never match them, and the
engine, the alerter, the rule tester and validation agree."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.engine import RuleSet, RuleSpec
from rules.models import AlertRule, EventAuditLog
from tests.support.events import make_event, push

OPS = Actor.cli("ops")
LINK_DOWN_TRAP = "1.3.6.1.6.3.1.1.5.3"


def test_a_regex_rule_is_tried_on_an_empty_message() -> None:
    rules = RuleSet.compile([RuleSpec(id=1, priority=10, match_type="regex", match_string="^$")])
    assert rules.match("r1", "", trap_oid=LINK_DOWN_TRAP).rule.id == 1
    assert rules.match("r1", "").rule.id == 1, "a message-less event without an OID too"
    assert rules.decide("r1", "", None, None)[1].id == 1, "the alerter's hot path agrees"
    assert [r.id for r in rules.match("r1", "", all_matches=True).matches] == [1], "and the tester's path"
    assert rules.match("r1", "link down").rule is None


def test_an_empty_message_still_respects_priority_between_oid_and_regex_rules() -> None:
    rules = RuleSet.compile(
        [
            RuleSpec(id=1, priority=50, match_type="oid_prefix", trap_oid="1.3.6.1.6.3"),
            RuleSpec(id=2, priority=10, match_type="regex", match_string="^$"),
            RuleSpec(id=3, priority=5, match_type="contains", match_string="down"),
        ]
    )
    result = rules.match("r1", "", trap_oid=LINK_DOWN_TRAP, all_matches=True)
    assert result.rule.id == 2
    assert [r.id for r in result.matches] == [2, 1], "a contains rule never matches an empty message"


@pytest.mark.django_db
def test_validation_accepts_a_regex_for_empty_messages_and_refuses_a_blank_contains_rule(operator_actor):
    rule = services.create(AlertRule, actor=operator_actor, name="no text", match_type="regex", match_string="^$")
    assert rule.match_string == "^$"
    with pytest.raises(ValidationError) as refused:
        services.create(AlertRule, actor=operator_actor, name="blank", match_type="contains", match_string="  ")
    assert "match_string" in refused.value.message_dict
    help_text = AlertRule._meta.get_field("match_string").help_text
    assert "empty message" in help_text
    assert "'^$'" in help_text


@pytest.mark.django_db(transaction=True)
def test_the_alerter_catches_a_trap_without_text_with_an_empty_message_regex(redis_client, clean_pipeline):
    rule = services.create(
        AlertRule, actor=OPS, name="silent trap", match_type="regex", match_string="^$", severity="minor"
    )
    silent = make_event(message="", trap_oid=LINK_DOWN_TRAP)
    spoken = make_event(message="link down", trap_oid=LINK_DOWN_TRAP)
    push(redis_client, [silent, spoken])
    alerter = Alerter("empty-1")
    for _ in range(10):
        if not alerter.step(block_ms=10):
            break
    rows = {str(row.event_id): row for row in EventAuditLog.objects.all()}
    assert (rows[silent["event_id"]].rule_id, rows[silent["event_id"]].forwarded) == (rule.pk, True)
    assert rows[spoken["event_id"]].rule_id is None


@pytest.mark.django_db
def test_the_rule_tester_answers_an_empty_message_as_the_alerter_does(admin_client_alice, operator_actor):
    rule = services.create(AlertRule, actor=operator_actor, name="no text", match_type="regex", match_string="^$")
    form = {"hostname": "sw1", "message": "", "trap_oid": "", "syslog_severity": ""}
    response = admin_client_alice.post(reverse("admin:rules_alertrule_tester"), form)
    assert response.status_code == 200
    assert response.context["result"].rule.id == rule.pk
    with_oid = admin_client_alice.post(reverse("admin:rules_alertrule_tester"), {**form, "trap_oid": LINK_DOWN_TRAP})
    assert with_oid.context["result"].rule.id == rule.pk


# --- a pattern is saved as typed: the rule that matches is the rule the operator wrote -----------


@pytest.mark.django_db
def test_a_pattern_with_a_leading_space_is_saved_as_typed_everywhere(admin_client_alice, client, api_keys):
    form = {
        "name": "indented", "description": "", "is_active": "on", "priority": "10", "match_type": "regex",
        "match_string": "^ ", "trap_oid": "", "syslog_severity": "", "prod_handling": "page_and_ticket",
        "dev_handling": "ticket_only", "team_assignment": "", "severity": "", "change_reason": "CHG-1",
    }  # fmt: skip
    assert admin_client_alice.post(reverse("admin:rules_alertrule_add"), form).status_code == 302
    api = client.post(
        "/api/v2/rules/",
        {"name": "spaced", "match_type": "contains", "match_string": " down", "reason": "CHG-2"},
        content_type="application/json",
        HTTP_X_API_KEY=api_keys["write"],
    )
    assert api.status_code == 201, api.content
    assert dict(AlertRule.objects.values_list("name", "match_string")) == {"indented": "^ ", "spaced": " down"}
    tester = reverse("admin:rules_alertrule_tester")
    assert admin_client_alice.post(tester, {"hostname": "sw1", "message": "shutdown"}).context["result"].rule is None
    assert admin_client_alice.post(tester, {"hostname": "sw1", "message": " x"}).context["result"].rule is not None


@pytest.mark.django_db
def test_an_oid_rule_with_a_blank_match_string_is_stored_without_it(operator_actor):
    rule = services.create(
        AlertRule, actor=operator_actor, name="trap", match_type="oid_prefix", match_string="  ", trap_oid="1.3.6.1"
    )
    assert rule.match_string == ""
