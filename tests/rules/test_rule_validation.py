"""Invalid rules, hosts and teams are refused with a message naming the field, and never stored."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from rules import services
from rules.models import AlertRule, DevHost, DeviceTeam

pytestmark = pytest.mark.django_db


def create_rule(actor, **fields):
    defaults = {"name": "rule", "match_type": "contains", "match_string": "down"}
    return services.create(AlertRule, actor=actor, reason="test", **{**defaults, **fields})


def refused_fields(actor, **fields) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        create_rule(actor, **fields)
    assert AlertRule.objects.count() == 0, "an invalid rule must not be stored"
    return set(caught.value.message_dict)


def test_regex_that_re2_cannot_compile_is_refused_on_match_string(operator_actor):
    with pytest.raises(ValidationError) as caught:
        create_rule(operator_actor, match_type="regex", match_string="interface (up")
    assert caught.value.message_dict["match_string"] == [
        "Not a valid RE2 regular expression: missing ): interface (up."
    ]
    assert AlertRule.objects.count() == 0


def test_backreferences_are_refused_because_re2_cannot_run_them(operator_actor):
    assert refused_fields(operator_actor, match_type="regex", match_string=r"(a+)\1") == {"match_string"}


def test_contains_rule_needs_a_match_string(operator_actor):
    assert refused_fields(operator_actor, match_string="   ") == {"match_string"}


def test_contains_rule_may_not_carry_a_trap_oid(operator_actor):
    assert refused_fields(operator_actor, trap_oid="1.3.6") == {"trap_oid"}


def test_oid_prefix_rule_needs_a_dotted_numeric_oid(operator_actor):
    assert refused_fields(operator_actor, match_type="oid_prefix", match_string="", trap_oid="1.3.x.6") == {"trap_oid"}
    assert refused_fields(operator_actor, match_type="oid_prefix", match_string="", trap_oid="") == {"trap_oid"}
    assert refused_fields(operator_actor, match_type="oid_prefix", match_string="", trap_oid="1..3") == {"trap_oid"}


def test_oid_prefix_rule_may_not_carry_a_match_string(operator_actor):
    assert refused_fields(operator_actor, match_type="oid_prefix", match_string="down", trap_oid="1.3.6") == {
        "match_string"
    }


def test_oid_is_normalised_without_leading_dot(operator_actor):
    rule = create_rule(operator_actor, match_type="oid_prefix", match_string="", trap_oid=" .1.3.6.1.4.1.9 ")
    rule.refresh_from_db()
    assert rule.trap_oid == "1.3.6.1.4.1.9"


def test_syslog_severity_filter_must_be_between_0_and_7(operator_actor):
    assert refused_fields(operator_actor, syslog_severity=8) == {"syslog_severity"}


def test_unknown_handling_and_severity_are_refused(operator_actor):
    assert refused_fields(operator_actor, prod_handling="shout", severity="apocalyptic") == {
        "prod_handling",
        "severity",
    }


def test_unknown_field_is_refused_by_name(operator_actor):
    assert refused_fields(operator_actor, colour="red") == {"colour"}


def test_hostnames_are_stored_lower_case(operator_actor):
    host = services.create(DevHost, actor=operator_actor, hostname="  Lab-RTR-01 ")
    team = services.create(DeviceTeam, actor=operator_actor, hostname="Core-RTR-01", team_name=" network-core ")
    host.refresh_from_db()
    team.refresh_from_db()
    assert (host.hostname, team.hostname, team.team_name) == ("lab-rtr-01", "core-rtr-01", "network-core")


def test_hostnames_are_unique_whatever_their_case(operator_actor):
    services.create(DevHost, actor=operator_actor, hostname="lab-rtr-01")
    with pytest.raises(ValidationError) as caught:
        services.create(DevHost, actor=operator_actor, hostname="LAB-RTR-01")
    assert "hostname" in caught.value.message_dict
    assert DevHost.objects.count() == 1


def test_hostname_with_spaces_or_slashes_is_refused(operator_actor):
    with pytest.raises(ValidationError) as caught:
        services.create(DevHost, actor=operator_actor, hostname="lab rtr/01")
    assert "hostname" in caught.value.message_dict
    assert DevHost.objects.count() == 0


def test_device_team_needs_a_team_name(operator_actor):
    with pytest.raises(ValidationError) as caught:
        services.create(DeviceTeam, actor=operator_actor, hostname="core-rtr-01", team_name="  ")
    assert "team_name" in caught.value.message_dict


def test_any_orm_save_stores_the_hostname_lower_case(operator_actor):
    from core.audit import audited

    with audited(operator_actor, "direct save"):
        DevHost.objects.create(hostname="UPPER-Case")
    assert DevHost.objects.get().hostname == "upper-case"


def test_database_refuses_an_upper_case_hostname_written_by_raw_sql():
    from django.db import IntegrityError, connection, transaction

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rules_devhost (hostname, description, created_at, updated_at)"
            " VALUES ('UPPER', '', now(), now())"
        )
