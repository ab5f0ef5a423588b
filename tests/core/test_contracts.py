"""The stream contracts (core.contracts): Django-free, the one source of the vocabularies the database stores,
and what every producer writes and every consumer reads, checked against the real writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from django.core.management import call_command

from configcenter import mirror
from core import contracts, streams
from core.audit import Actor
from core.redis import key
from delivery import dlq
from delivery.breaker import CircuitBreaker
from delivery.forwarder import Forwarder
from delivery.models import DlqQueue
from delivery.ratelimit import SharedRateLimit
from delivery.retry import schedule_key
from rules import services
from rules.alerter import Alerter
from rules.alerts import rule_alert
from rules.engine import RuleSet, RuleSpec
from rules.flood import Flood, meta_alert
from rules.models import AlertRule, AlertSeverity, Handling, MatchType
from tests.support.dlq_helpers import LocalHTTPServer, add_alerter_entry, add_moog_entry
from tests.support.events import make_alert, make_event, push, push_alerts, read_stream
from tests.support.waiting import apply_setting, wait_for

ROOT = Path(__file__).resolve().parents[2]
ALERT_KEYS = contracts.Alert.__required_keys__ | contracts.Alert.__optional_keys__


def keys_of(record: type[Any]) -> set[str]:
    return set(record.__required_keys__ | record.__optional_keys__)


def only_entry(client: Any, queue: str) -> dict[str, bytes]:
    ((_, fields),) = client.xrange(streams.dlq_stream(queue))
    return {name.decode(): value for name, value in fields.items()}


# --- the module ------------------------------------------------------------------------------------


def test_the_contracts_import_no_django():
    code = "import core.contracts, sys; assert not any(m.startswith('django') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_contracts_import_only_the_standard_library():
    code = "import sys; before = set(sys.modules); import core.contracts; print(*sorted(set(sys.modules) - before))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    imported = {name.split(".")[0] for name in run.stdout.split()}
    assert imported - set(sys.stdlib_module_names) == {"core"}


# --- vocabularies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vocabulary", "labels"),
    [
        (contracts.MatchType, contracts.MATCH_TYPE_LABELS),
        (contracts.Handling, contracts.HANDLING_LABELS),
        (contracts.DlqQueue, contracts.DLQ_QUEUE_LABELS),
    ],
)
def test_every_value_of_a_vocabulary_has_a_label(vocabulary, labels):
    assert tuple(labels) == get_args(vocabulary)


def test_the_models_store_the_contracts_values_unchanged():
    # Stored in rules_alertrule and delivery_dlqaction: renaming one would need a data migration.
    assert MatchType.values == ["contains", "regex", "oid_prefix"] == list(get_args(contracts.MatchType))
    assert Handling.values == ["page_and_ticket", "page_only", "ticket_only", "ignore"]
    assert Handling.values == list(get_args(contracts.Handling))
    assert AlertSeverity.values == list(contracts.SEVERITIES)
    assert DlqQueue.values == ["alerter", "moog", "dead"] == list(contracts.DLQ_QUEUES)
    assert Handling(contracts.PAGE_ONLY).label == "Page only"


@pytest.mark.django_db
def test_the_derived_choices_need_no_migration():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_the_engine_decides_in_the_contracts_vocabulary():
    rule = RuleSpec(id=1, priority=1, match_type=contracts.CONTAINS, match_string="down")
    ruleset = RuleSet.compile([rule], dev_hosts=["lab-*"])
    outcomes = set(get_args(contracts.Outcome))
    for host, message in [("core-rtr-01", "link down"), ("lab-sw-01", "link down"), ("core-rtr-01", "up")]:
        environment, _, handling, _ = ruleset.decide(host, message, None, None)
        assert environment in get_args(contracts.Environment)
        assert handling in outcomes


def test_the_names_in_redis_keep_their_spelling():
    # A renamed stream, group or channel would strand what a running deployment holds under the old name.
    assert streams.ingest_stream() == key("stream", "ingest")
    assert streams.alerts_stream() == key("stream", "alerts")
    assert [streams.dlq_stream(queue) for queue in contracts.DLQ_QUEUES] == [
        key("dlq", "alerter"),
        key("dlq", "moog"),
        key("dlq", "dead"),
    ]
    assert (contracts.ALERTERS_GROUP, contracts.FORWARDERS_GROUP) == ("alerters", "forwarders")
    assert services.rules_channel() == key("rules", "updates")
    assert mirror.updates_channel() == key("config", "updates")


# --- producers and consumers agree -----------------------------------------------------------------


def test_a_rule_alert_has_the_alerts_keys():
    rule = RuleSpec(id=7, priority=1, match_type=contracts.CONTAINS, match_string="down", name="link down")
    plain = rule_alert(make_event(), rule, team="netops", severity="major", handling="page_only", environment="prod")
    assert set(plain) == contracts.Alert.__required_keys__ | {"rule_name"}
    trap = make_event(variables={"ifIndex": 3})
    with_varbinds = rule_alert(trap, rule, team="netops", severity="", handling="page_only", environment="dev")
    assert set(with_varbinds) == contracts.Alert.__required_keys__ | {"rule_name", "details"}
    assert plain["kind"] == contracts.RULE_ALERT


def test_a_flood_meta_alert_has_the_alerts_keys():
    flood = Flood("edge-sw-07", 1795688100, 300, 250, [("port <n> flapping", 250)], "port 3 flapping")
    alert = meta_alert(flood, team="network-ops", received_at="2026-11-26T10:15:30.250000+00:00")
    assert set(alert) == contracts.Alert.__required_keys__ | {"details"}
    assert (alert["kind"], alert["handling"]) == (contracts.FLOOD_ALERT, contracts.PAGE_AND_TICKET)


def test_the_test_helpers_write_what_the_contracts_declare():
    assert set(make_event()) == keys_of(contracts.CanonicalEvent)
    assert contracts.Alert.__required_keys__ <= set(make_alert()) <= ALERT_KEYS


@pytest.mark.django_db(transaction=True)
def test_the_alerter_queues_alerts_and_dead_letters_as_declared(redis_client, clean_pipeline):
    services.create(
        AlertRule, actor=Actor.cli("test"), name="link down", match_type=contracts.CONTAINS,
        match_string="changed state to down", priority=10, team_assignment="netops",
    )  # fmt: skip
    redis_client.xadd(streams.ingest_stream(), {contracts.PAYLOAD_FIELD: b"{not json"})
    push(redis_client, [make_event()])
    alerter = Alerter("contracts")
    assert wait_for(lambda: not alerter.step(block_ms=10) and alerter.idle, timeout=10)
    (alert,) = read_stream(redis_client, streams.alerts_stream())
    assert set(alert) == contracts.Alert.__required_keys__ | {"rule_name"}
    entry = only_entry(redis_client, contracts.ALERTER_QUEUE)
    assert set(entry) == keys_of(contracts.AlerterDeadLetter)
    assert entry["reason"].decode() == contracts.MALFORMED

    (entry_id,) = [entry_id.decode() for entry_id, _ in redis_client.xrange(streams.dlq_stream("alerter"))]
    assert dlq.move_to_dead(redis_client, contracts.ALERTER_QUEUE, [entry_id]).ids(dlq.DEAD) == [entry_id]
    buried = only_entry(redis_client, contracts.DEAD_QUEUE)
    assert set(buried) == keys_of(contracts.AlerterDeadLetter) | keys_of(contracts.BuriedFields)
    assert buried["origin"].decode() == contracts.ALERTER_QUEUE


def test_the_forwarder_requeues_and_dead_letters_alerts_as_declared(redis_client, clean_pipeline):
    redis_client.delete(CircuitBreaker(redis_client).key, SharedRateLimit(redis_client).key, schedule_key())
    with LocalHTTPServer() as moog:
        apply_setting("moog_url", f"{moog.url}/events")
        moog.respond("/events", 503)
        push_alerts(redis_client, [make_alert()])
        forwarder = Forwarder("contracts")
        forwarder.step(block_ms=10)
        ((member, _),) = redis_client.zrange(schedule_key(), 0, -1, withscores=True)
        retried = orjson.loads(member)
        assert contracts.Alert.__required_keys__ | {"attempts", "last_error"} <= set(retried) <= ALERT_KEYS

        moog.respond("/events", 400)
        redis_client.delete(schedule_key())
        push_alerts(redis_client, [make_alert()])
        forwarder.step(block_ms=10)
        forwarder.close()
    entry = only_entry(redis_client, contracts.MOOG_QUEUE)
    assert set(entry) == keys_of(contracts.MoogDeadLetter)
    assert (entry["reason"].decode(), entry["status"]) == (contracts.http_reason(400), b"400")


def test_the_dlq_test_helpers_write_the_declared_records(redis_client, clean_pipeline):
    add_alerter_entry(redis_client)
    add_moog_entry(redis_client)
    assert set(only_entry(redis_client, contracts.ALERTER_QUEUE)) == keys_of(contracts.AlerterDeadLetter)
    assert set(only_entry(redis_client, contracts.MOOG_QUEUE)) == keys_of(contracts.MoogDeadLetter)
