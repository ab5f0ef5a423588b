"""Every write to rules, hosts and teams is audited with who, when, why, old and new values."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from core.audit import Actor, AuditContextMissing
from core.context import request_id_scope
from rules import services
from rules.models import AlertRule, DevHost, DeviceTeam

pytestmark = pytest.mark.django_db


def make_rule(actor, reason="new rule", **fields):
    defaults = {"name": "Interface down", "match_type": "contains", "match_string": "changed state to down"}
    return services.create(AlertRule, actor=actor, reason=reason, **{**defaults, **fields})


def test_create_records_actor_user_reason_and_request_id(operator_actor, admin_user):
    with request_id_scope("req-create-0001"):
        rule = make_rule(operator_actor, reason="ticket NET-1")
    record = rule.history.get()
    assert record.history_type == "+"
    assert record.history_actor == "user:alice"
    assert record.history_user == admin_user
    assert record.history_change_reason == "ticket NET-1"
    assert record.history_request_id == "req-create-0001"
    assert record.history_date is not None


def test_update_records_old_and_new_values(operator_actor):
    rule = make_rule(operator_actor)
    services.update(rule, actor=Actor.cli("ops"), changes={"priority": 5, "team_assignment": "noc"}, reason="tune")
    newest, oldest = rule.history.order_by("-history_id")[:2]
    assert newest.history_type == "~"
    assert newest.history_actor == "cli:ops"
    assert newest.history_user is None
    assert newest.history_change_reason == "tune"
    changes = {c.field: (c.old, c.new) for c in newest.diff_against(oldest).changes}
    assert changes["priority"] == (100, 5)
    assert changes["team_assignment"] == ("", "noc")


def test_delete_records_actor_and_reason_and_keeps_last_values(operator_actor):
    rule = make_rule(operator_actor)
    rule_id = rule.pk
    services.delete(rule, actor=Actor.system("cleanup"), reason="obsolete")
    record = AlertRule.history.filter(id=rule_id).order_by("-history_id").first()
    assert record.history_type == "-"
    assert record.history_actor == "system:cleanup"
    assert record.history_change_reason == "obsolete"
    assert record.match_string == "changed state to down"
    assert not AlertRule.objects.filter(pk=rule_id).exists()


def test_bulk_deactivation_writes_one_history_row_per_changed_rule(operator_actor):
    rules = [make_rule(operator_actor, name=f"r{i}") for i in range(3)]
    services.update(rules[2], actor=operator_actor, changes={"is_active": False})
    changed = services.set_rules_active(actor=operator_actor, rules=rules, active=False, reason="maintenance")
    assert changed == 2
    for rule in rules[:2]:
        record = rule.history.order_by("-history_id").first()
        assert (record.history_actor, record.history_change_reason, record.is_active) == (
            "user:alice",
            "maintenance",
            False,
        )
        previous = record.prev_record
        assert {c.field: (c.old, c.new) for c in record.diff_against(previous).changes}["is_active"] == (
            True,
            False,
        )
    # The rule that was already inactive got no extra row.
    assert rules[2].history.count() == 2


def test_bulk_delete_writes_one_history_row_per_object(operator_actor):
    hosts = [services.create(DevHost, actor=operator_actor, hostname=f"lab-{i}") for i in range(3)]
    deleted = services.delete_many(actor=operator_actor, objects=hosts, reason="lab closed")
    assert deleted == 3
    rows = DevHost.history.filter(history_type="-")
    assert rows.count() == 3
    assert set(rows.values_list("history_change_reason", flat=True)) == {"lab closed"}


def test_device_team_changes_are_audited(operator_actor):
    team = services.create(DeviceTeam, actor=operator_actor, hostname="edge-fw-01", team_name="security")
    services.update(team, actor=operator_actor, changes={"team_name": "netsec"}, reason="reorg")
    record = team.history.order_by("-history_id").first()
    assert (record.team_name, record.history_change_reason) == ("netsec", "reorg")


def test_refused_update_leaves_stored_rule_and_history_untouched(operator_actor):
    rule = make_rule(operator_actor)
    with pytest.raises(ValidationError):
        services.update(rule, actor=operator_actor, changes={"match_type": "regex", "match_string": "(unclosed"})
    rule.refresh_from_db()
    assert (rule.match_type, rule.match_string) == ("contains", "changed state to down")
    assert rule.history.count() == 1


def test_saving_outside_a_service_is_refused():
    with pytest.raises(AuditContextMissing):
        AlertRule.objects.create(name="sneaky", match_type="contains", match_string="x")
    assert AlertRule.objects.count() == 0


def test_actor_must_be_an_actor_object():
    with pytest.raises(TypeError):
        services.create(DevHost, actor="alice", hostname="lab-1")


def test_committed_change_is_announced_to_alerters(operator_actor, redis_client, django_capture_on_commit_callbacks):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(services.rules_channel())
    pubsub.get_message(timeout=1)  # subscription confirmation
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        make_rule(operator_actor)
    assert pubsub.get_message(timeout=0.2) is None, "nothing may be announced before commit"
    for callback in callbacks:
        callback()
    message = pubsub.get_message(timeout=2)
    pubsub.close()
    assert message is not None
    assert message["data"] == b"rule"
