"""Expensive rules (ADR-007): a regex's RE2 program is bounded at save, rules see a bounded number of
message bytes in the alerter and the tester alike, and the admin shows what each regex rule costs."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.audit import Actor
from rules import engine, regexsets, services
from rules.alerter import Alerter
from rules.models import AlertRule, EventAuditLog
from tests.support.events import make_event, push
from tests.support.waiting import apply_setting

OPS = Actor.cli("ops")


def hungry(n: int) -> str:
    """The issue's pattern: linear in RE2, but its DFA needs 2**n states, so RE2 falls back to its NFA."""
    return f"[ab]*a[ab]{{{n}}}[^ab]"


@pytest.mark.django_db
def test_a_regex_whose_program_is_too_large_is_refused_naming_the_field(operator_actor):
    with pytest.raises(ValidationError) as refused:
        services.create(AlertRule, actor=operator_actor, name="hungry", match_type="regex", match_string=hungry(1000))
    problem = refused.value.message_dict["match_string"][0]
    assert f"compiles to {regexsets.regex_program_size(hungry(1000))} instructions" in problem
    assert "rule_regex_max_program_size" in problem
    assert AlertRule.objects.count() == 0


@pytest.mark.django_db(transaction=True)  # settings reach the process on commit
def test_the_program_size_bound_is_a_runtime_setting(operator_actor):
    services.create(AlertRule, actor=operator_actor, name="ok", match_type="regex", match_string=hungry(200))
    apply_setting("rule_regex_max_program_size", 150)
    with pytest.raises(ValidationError) as refused:
        services.create(AlertRule, actor=operator_actor, name="too big", match_type="regex", match_string=hungry(200))
    assert "more than the 150 allowed" in refused.value.message_dict["match_string"][0]


@pytest.mark.parametrize("text", ["plain ascii " * 40, "été " * 90, "\U0001f525 fire " * 50, "x" * 300 + "€€€"])
def test_a_message_is_cut_at_a_character_boundary_within_the_byte_limit(text: str) -> None:
    whole = text.encode()
    for limit in range(len(whole) + 2):
        cut = engine.clip_message(text, limit)
        data = cut.encode()
        assert text.startswith(cut)
        assert len(data) <= limit
        # The longest such prefix: one more character would pass the limit.
        assert cut == text or len(text[: len(cut) + 1].encode()) > limit


def test_a_short_message_is_returned_unchanged_without_copying() -> None:
    text = "link down"
    assert engine.clip_message(text, 256) is text


@pytest.mark.django_db(transaction=True)
def test_the_alerter_matches_only_the_bytes_rules_see_and_audits_the_whole_message(redis_client, clean_pipeline):
    rule = services.create(AlertRule, actor=OPS, name="tail", match_type="regex", match_string="TAIL")
    apply_setting("rule_max_message_bytes", 256)
    short = make_event(message="é" * 100 + "TAIL")  # 204 bytes: all seen
    long = make_event(message="é" * 127 + "TAIL")  # "TAIL" starts at byte 254: cut
    push(redis_client, [short, long])
    alerter = Alerter("cost-1")
    for _ in range(10):
        if not alerter.step(block_ms=10):
            break
    rows = {str(row.event_id): row for row in EventAuditLog.objects.all()}
    assert rows[short["event_id"]].rule_id == rule.pk
    assert rows[long["event_id"]].rule_id is None
    assert rows[long["event_id"]].message == long["message"], "the audit log keeps the whole message"


@pytest.mark.django_db(transaction=True)
def test_the_rule_tester_cuts_the_message_as_the_alerter_does(admin_client_alice, operator_actor):
    services.create(AlertRule, actor=operator_actor, name="tail", match_type="regex", match_string="TAIL")
    apply_setting("rule_max_message_bytes", 256)
    url = reverse("admin:rules_alertrule_tester")
    seen = admin_client_alice.post(url, {"hostname": "sw1", "message": "é" * 100 + "TAIL"})
    cut = admin_client_alice.post(url, {"hostname": "sw1", "message": "é" * 127 + "TAIL"})
    assert seen.context["result"].rule is not None
    assert cut.context["result"].rule is None
    assert "Rules saw only the first 256 bytes" in cut.content.decode()
    assert "Rules saw only" not in seen.content.decode()


@pytest.mark.django_db
def test_the_rule_list_shows_each_regex_rules_program_size_and_measured_cost(admin_client_alice, operator_actor):
    services.create(AlertRule, actor=operator_actor, name="hungry", match_type="regex", match_string=hungry(20))
    services.create(AlertRule, actor=operator_actor, name="plain", match_type="contains", match_string="down")
    page = admin_client_alice.get(reverse("admin:rules_alertrule_changelist")).content.decode()
    assert "ost (RE2 program size; µs per 8 KiB)" in page
    assert f"{regexsets.regex_program_size(hungry(20))} instr; " in page
    row = next(line for line in page.splitlines() if "instr; " in line)
    assert row.split("instr; ")[1].split(" µs")[0].replace(",", "").isdigit()
