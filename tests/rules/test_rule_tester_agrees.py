"""The rule tester answers exactly what the alerter would, for every event ingest accepts: it builds
the canonical event with ingest's own normalisation, keeps whitespace, and handles a browser's CR LF
deliberately. It also says where an alert's severity comes from."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from django.urls import reverse
from django.utils.html import escape

from core.audit import Actor
from ingest import schema
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, DevHost, DeviceTeam, EventAuditLog
from tests.support.events import push

OPS = Actor.cli("ops")
TESTER = "admin:rules_alertrule_tester"

# Events as senders post them to ingest: whitespace at either end, line breaks, empty and missing
# messages, severity names, OIDs in net-snmp's notation, mixed-case hosts.
SENT = [
    {"hostname": "core-rtr-01", "message": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down"},
    {"hostname": "core-rtr-01", "message": "link down\n"},
    {"hostname": "core-rtr-01", "message": " leading space"},
    {"hostname": "core-rtr-01", "message": "  "},
    {"hostname": "core-rtr-01", "message": ""},
    {"hostname": "core-rtr-01", "message": "", "syslog_severity": "err"},
    {"hostname": " Core-RTR-02 ", "trap_oid": " .1.3.6.1.6.3.1.1.5.3"},
    {"hostname": "core-rtr-02", "message": "", "trap_oid": "1.3.6.1.4.1.9.9.41.2"},
    {"hostname": "core-rtr-02", "message": "fan tray\r\nfailed", "syslog_severity": "warning"},
    {"hostname": "core-rtr-02", "message": "fan tray\nfailed", "syslog_severity": 4},
    {"hostname": "LAB-RTR-01", "message": "changed state to down", "syslog_severity": 3},
    {"hostname": "lab-rtr-01.lab.example.net", "message": "changed state to down\n", "syslog_severity": "6"},
    {"hostname": "core-rtr-03", "message": "été \U0001f525 changed state to DOWN", "syslog_severity": 0},
    {"hostname": "core-rtr-03", "message": "trailing tab\t", "source_type": "syslog", "vendor": "x"},
]


def seed_rules() -> None:
    def rule(name: str, **fields: object) -> None:
        services.create(AlertRule, actor=OPS, name=name, **fields)

    rule("ends with newline", match_type="regex", match_string=r"\n$", priority=5, severity="minor")
    rule("starts with space", match_type="regex", match_string="^ ", priority=6)
    rule("no text", match_type="regex", match_string="^$", priority=7, team_assignment="traps")
    rule("blank text", match_type="regex", match_string=r"^\s+$", priority=8, prod_handling="ignore")
    rule("carriage return", match_type="regex", match_string=r"\r", priority=9, severity="critical")
    rule("link down", match_type="contains", match_string="changed state to down", priority=10)
    rule("cisco env", match_type="oid_prefix", trap_oid="1.3.6.1.4.1.9.9.41", priority=20)
    rule("link trap", match_type="oid_prefix", trap_oid="1.3.6.1.6.3.1.1.5", priority=30)
    rule("fan warning", match_type="contains", match_string="fan", syslog_severity=4, priority=40)
    rule("tail", match_type="regex", match_string=r"\s$", priority=50)
    services.create(DevHost, actor=OPS, hostname="lab-rtr-01")
    services.create(DevHost, actor=OPS, hostname="*.lab.example.net")
    services.create(DeviceTeam, actor=OPS, hostname="core-*", team_name="core")
    services.create(DeviceTeam, actor=OPS, hostname="lab-*", team_name="lab")


def canonical(item: dict) -> dict:
    event, errors = schema.normalise(item, schema.Receipt(datetime.now(UTC), "req-tester", "test"))
    assert not errors, errors
    return event


def run_alerter(redis_client, events: list[dict]) -> dict[str, EventAuditLog]:
    push(redis_client, events)
    alerter = Alerter("tester-agrees")
    for _ in range(10):
        if not alerter.step(block_ms=10):
            break
    return {str(row.event_id): row for row in EventAuditLog.objects.all()}


def answer(result, tested) -> tuple:
    """What the tester said, in the audit row's terms."""
    rule_id = result.rule.id if result.rule else None
    return (rule_id, result.environment, result.handling, result.team, tested.get("severity", ""))


@pytest.mark.django_db(transaction=True)
def test_for_every_event_ingest_accepts_the_tester_answers_what_the_alerter_did(
    redis_client, clean_pipeline, admin_client_alice
):
    seed_rules()
    events = [canonical(item) for item in SENT]
    rows = run_alerter(redis_client, events)
    assert len(rows) == len(SENT)
    for item, event in zip(SENT, events, strict=True):
        row = rows[event["event_id"]]
        severity = (row.alert_severity or "indeterminate") if row.rule_id else ""
        by_alerter = (row.rule_id, row.environment, row.handling, row.team, severity)
        response = admin_client_alice.post(reverse(TESTER), {"event_json": orjson.dumps(item).decode()})
        assert response.status_code == 200
        assert response.context["form"].errors == {}, item
        assert answer(response.context["result"], response.context["tested"]) == by_alerter, item
        if "\r" in item.get("message", "") or set(item) - {"hostname", "message", "trap_oid", "syslog_severity"}:
            continue
        # The same event typed into the fields (the form's CR LF handling is tested on its own).
        fields = {
            "hostname": item["hostname"],
            "message": item.get("message", ""),
            "trap_oid": item.get("trap_oid", ""),
            "syslog_severity": str(event["syslog_severity"] if event["syslog_severity"] is not None else ""),
        }
        typed = admin_client_alice.post(reverse(TESTER), fields)
        assert answer(typed.context["result"], typed.context["tested"]) == by_alerter, fields


@pytest.mark.django_db
def test_the_message_is_not_stripped(admin_client_alice):
    rule = services.create(AlertRule, actor=OPS, name="nl", match_type="regex", match_string=r"down\n$")
    response = admin_client_alice.post(reverse(TESTER), {"hostname": "sw1", "message": "link down\n"})
    assert response.context["result"].rule.id == rule.pk
    shown = escape(orjson.dumps({"hostname": "sw1", "message": "link down\n"}).decode())[:-1]
    assert shown in response.content.decode(), "the page shows the event as matched"


@pytest.mark.django_db
def test_a_browsers_crlf_becomes_lf_unless_kept(admin_client_alice):
    cr = services.create(AlertRule, actor=OPS, name="cr", match_type="regex", match_string=r"\r", priority=1)
    lf = services.create(AlertRule, actor=OPS, name="lf", match_type="regex", match_string=r"a\nb", priority=2)
    form = {"hostname": "sw1", "message": "a\r\nb"}
    assert admin_client_alice.post(reverse(TESTER), form).context["result"].rule.id == lf.pk
    kept = admin_client_alice.post(reverse(TESTER), {**form, "keep_crlf": "on"})
    assert kept.context["result"].rule.id == cr.pk
    page = admin_client_alice.get(reverse(TESTER)).content.decode()
    assert "the tester turns them into LF, what syslog and JSON senders send, unless 'Keep CR LF'" in page


@pytest.mark.django_db
def test_an_empty_message_without_oid_is_tested_as_ingest_accepts_it(admin_client_alice):
    response = admin_client_alice.post(reverse(TESTER), {"hostname": "sw1", "message": ""})
    assert response.context["form"].errors == {}
    assert response.context["result"].handling == "unhandled"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("form", "field", "text"),
    [
        ({"hostname": "", "message": "x"}, "hostname", "must not be empty"),
        ({"hostname": "sw1", "message": "x", "trap_oid": "not-an-oid"}, "trap_oid", "dotted numeric OID"),
        ({"event_json": '{"hostname": "sw1"}'}, "event_json", "message: is required unless trap_oid is given"),
        ({"event_json": '{"hostname": "sw1", "message": "a\\u0000b"}'}, "event_json", "NUL"),
        ({"event_json": "[1, 2]"}, "event_json", "must be a JSON object"),
        ({"event_json": "{nope"}, "event_json", "Not valid JSON"),
    ],
)
def test_the_tester_refuses_what_ingest_refuses_naming_the_field(admin_client_alice, form, field, text):
    response = admin_client_alice.post(reverse(TESTER), form)
    assert response.status_code == 200
    assert response.context["result"] is None
    assert text in " ".join(response.context["form"].errors[field])


# --- item 24: the alert severity a rule without one gives ------------------------------------------


def test_the_severity_fields_help_text_states_the_default():
    help_text = AlertRule._meta.get_field("severity").help_text
    assert "from the event's syslog severity (0-2 critical, 3 major, 4 warning, 5 minor" in help_text
    assert "anything else or none: indeterminate" in help_text


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("rule_severity", "syslog_severity", "shown", "source"),
    [
        ("", "1", "critical", "from the event's syslog severity 1"),
        ("", "3", "major", "from the event's syslog severity 3"),
        ("", "4", "warning", "from the event's syslog severity 4"),
        ("", "5", "minor", "from the event's syslog severity 5"),
        ("", "6", "indeterminate", "the event has syslog severity 6: the default"),
        ("", "", "indeterminate", "the event has no syslog severity: the default"),
        ("clear", "0", "clear", "set by the rule"),
    ],
)
def test_the_tester_shows_the_alert_severity_and_where_it_comes_from(
    admin_client_alice, rule_severity, syslog_severity, shown, source
):
    services.create(AlertRule, actor=OPS, name="down", match_string="down", severity=rule_severity)
    form = {"hostname": "sw1", "message": "down", "syslog_severity": syslog_severity}
    page = admin_client_alice.post(reverse(TESTER), form).content.decode()
    assert f'id="alert-severity">{shown}<' in page
    assert source.replace("'", "&#x27;") in page
    assert "A rule with no alert severity: taken from the event&#x27;s syslog severity" in page
