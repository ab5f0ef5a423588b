"""An entry past the delivery limit is audited as dead-lettered, and a replay (service, admin or remediation)
audits and alerts it once: its audit row is updated, never duplicated."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.urls import reverse

from core import contracts, streams
from core.audit import Actor
from delivery import services as dlq_services
from delivery.models import DlqAction
from delivery.remediation import Remediator
from rules import services
from rules.alerter import Alerter
from rules.alerter.step import Batch
from rules.models import AlertRule, EventAuditLog
from tests.support.alerting import drain
from tests.support.events import make_event, push, read_stream
from tests.support.waiting import apply_setting

OPS = Actor.cli("ops")


@pytest.fixture
def link_rule(db):
    return services.create(
        AlertRule, actor=OPS, name="link down", match_type="contains", match_string="changed state to down",
        priority=10, team_assignment="network-ops", severity="major",
    )  # fmt: skip


def make_poison(client, event: dict) -> Alerter:
    """Deliver ``event``'s entry to an alerter that dies holding it; returns the alerter whose steps take it
    over and find it past the limit (``alerter_max_deliveries`` 1)."""
    apply_setting("alerter_claim_idle_seconds", 1)
    apply_setting("alerter_max_deliveries", 1)
    survivor = Alerter("survivor")
    push(client, [event])
    client.xreadgroup(contracts.ALERTERS_GROUP, "killed", {streams.ingest_stream(): ">"}, count=10)
    time.sleep(1.1)
    return survivor


def dlq_entries(client) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(entry_id.decode(), fields) for entry_id, fields in client.xrange(streams.dlq_stream("alerter"))]


def assert_processed_once(client, event: dict, rule: AlertRule) -> None:
    rows = list(EventAuditLog.objects.filter(event_id=event["event_id"]))
    assert len(rows) == 1, "the dead-lettered row is updated, not duplicated"
    row = rows[0]
    assert (row.handling, row.rule_id, row.forwarded, row.team) == ("page_and_ticket", rule.pk, True, "network-ops")
    assert row.dead_letter_reason == "max_deliveries: delivered 2 times", "kept: it was dead-lettered once"
    alerts = [a["event_id"] for a in read_stream(client, streams.alerts_stream())]
    assert alerts == [event["event_id"]], "alerted once"
    assert client.xlen(streams.dlq_stream("alerter")) == 0
    assert client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"] == 0


@pytest.mark.django_db(transaction=True)
def test_an_entry_past_the_delivery_limit_is_audited_as_dead_lettered_with_the_reason(
    redis_client, clean_pipeline, link_rule
):
    event = make_event()
    other = make_event(hostname="edge-rtr-02")
    survivor = make_poison(redis_client, event)
    push(redis_client, [other])
    assert drain(survivor) == 2
    [(_, fields)] = dlq_entries(redis_client)
    assert (fields[b"reason"], fields[b"error"]) == (b"max_deliveries", b"delivered 2 times")
    assert streams.decode(fields)["event_id"] == event["event_id"]
    row = EventAuditLog.objects.get(event_id=event["event_id"])
    assert (row.handling, row.dead_letter_reason, row.rule_id, row.forwarded) == (
        "dead_lettered", "max_deliveries: delivered 2 times", None, False,
    )  # fmt: skip
    assert (row.hostname, row.message, row.raw) == (event["hostname"], event["message"], event)
    assert EventAuditLog.objects.get(event_id=other["event_id"]).handling == "page_and_ticket"
    assert [a["event_id"] for a in read_stream(redis_client, streams.alerts_stream())] == [other["event_id"]]
    assert redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"] == 0


@pytest.mark.django_db(transaction=True)
def test_an_event_audited_before_its_alerter_died_keeps_its_row_when_dead_lettered(
    redis_client, clean_pipeline, link_rule
):
    # The killed alerter committed the audit row but never acknowledged the entry.
    event = make_event()
    stalled = Alerter("stalled")
    push(redis_client, [event])
    stalled.refresh_rules(force=True)
    entries = stalled.intake.read_new(block_ms=10)
    stalled.writer.audit(stalled._rows(Batch(entries)))  # audited, then "killed": no alert, no acknowledgement
    time.sleep(1.1)
    apply_setting("alerter_claim_idle_seconds", 1)
    apply_setting("alerter_max_deliveries", 1)
    drain(Alerter("survivor"))
    stalled.stop()
    row = EventAuditLog.objects.get(event_id=event["event_id"])
    assert (row.handling, row.dead_letter_reason) == ("page_and_ticket", "")
    assert [fields[b"reason"] for _, fields in dlq_entries(redis_client)] == [b"max_deliveries"]


@pytest.mark.django_db(transaction=True)
def test_the_service_replays_it_and_it_is_audited_and_alerted_once(redis_client, clean_pipeline, link_rule):
    event = make_event()
    survivor = make_poison(redis_client, event)
    assert drain(survivor) == 1
    [(entry_id, _)] = dlq_entries(redis_client)
    report = dlq_services.replay_entries(
        actor=OPS, queue="alerter", entry_ids=[entry_id], reason="alerters were being killed; replaying"
    )
    assert report.replayed == [entry_id]
    assert drain(survivor) == 1
    assert_processed_once(redis_client, event, link_rule)
    action = DlqAction.objects.get()
    assert (action.actor, action.queue, action.action, action.count) == ("cli:ops", "alerter", "replay", 1)
    assert action.details["event_ids"] == {entry_id: event["event_id"]}


@pytest.mark.django_db(transaction=True)
def test_the_admin_replays_it_and_it_is_audited_and_alerted_once(
    redis_client, clean_pipeline, link_rule, admin_client_alice
):
    event = make_event()
    survivor = make_poison(redis_client, event)
    assert drain(survivor) == 1
    [(entry_id, _)] = dlq_entries(redis_client)
    page = admin_client_alice.get(reverse("admin:delivery_dlq_queues") + "?queue=alerter").content.decode()
    assert entry_id in page
    done = admin_client_alice.post(
        reverse("admin:delivery_dlq_act", args=["alerter"]),
        {"action": "replay", "ids": [entry_id], "apply": "1", "reason": "INC-7 chaos run"},
        follow=True,
    )
    assert "Replay on the alerter queue: 1 replayed." in done.content.decode()
    assert drain(survivor) == 1
    assert_processed_once(redis_client, event, link_rule)
    assert DlqAction.objects.get().actor == "user:alice"


@pytest.mark.django_db(transaction=True)
def test_remediation_replays_it_and_it_is_audited_and_alerted_once(redis_client, clean_pipeline, link_rule):
    event = make_event()
    survivor = make_poison(redis_client, event)
    assert drain(survivor) == 1
    result = Remediator(client=redis_client).step()
    assert result.replayed == {"alerter": 1}
    assert drain(survivor) == 1
    assert_processed_once(redis_client, event, link_rule)
    assert DlqAction.objects.get().actor == "system:remediation"


@pytest.mark.django_db(transaction=True)
def test_a_replayed_event_arriving_twice_in_one_batch_is_audited_once(redis_client, clean_pipeline, link_rule):
    event = make_event()
    survivor = make_poison(redis_client, event)
    assert drain(survivor) == 1
    assert len(dlq_entries(redis_client)) == 1
    redis_client.delete(streams.dlq_stream("alerter"))
    push(redis_client, [event, event])  # e.g. replayed while a sender also sent it again
    assert drain(survivor) == 2
    assert EventAuditLog.objects.filter(event_id=event["event_id"]).count() == 1
    assert EventAuditLog.objects.get(event_id=event["event_id"]).handling == "page_and_ticket"
    assert len(read_stream(redis_client, streams.alerts_stream())) == 1


# --- load shedding (alerter_shed_mode dlq) dead-letters as surely: audited the same way ---------------------


@pytest.mark.django_db(transaction=True)
def test_shed_entries_are_audited_as_dead_lettered_and_a_replay_updates_their_rows(
    redis_client, clean_pipeline, link_rule
):
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 5)
    apply_setting("alerter_shed_mode", "dlq")
    for _ in range(6):  # an alert backlog the forwarders have not taken yet
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    events = [make_event(), make_event(hostname="edge-rtr-02")]
    push(redis_client, events)
    redis_client.xadd(streams.ingest_stream(), {"e": b"not an event"})
    alerter = Alerter("a1")
    assert alerter.step(block_ms=10) == 0
    dlq = dlq_entries(redis_client)
    assert [fields[b"reason"] for _, fields in dlq] == [b"malformed", b"shed", b"shed"]
    rows = {str(r.event_id): r for r in EventAuditLog.objects.all()}
    assert set(rows) == {e["event_id"] for e in events}
    for event in events:
        row = rows[event["event_id"]]
        assert (row.handling, row.dead_letter_reason, row.rule_id, row.forwarded) == (
            "dead_lettered", "shed: alert backlog 6 > 5", None, False,
        )  # fmt: skip
        assert (row.hostname, row.raw) == (event["hostname"], event)
    assert redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"] == 0

    # The backlog drains; remediation replays the shed entries (not the malformed one) and they are processed.
    redis_client.delete(streams.alerts_stream())
    result = Remediator(client=redis_client).step()
    assert result.replayed == {"alerter": 2}
    assert drain(alerter) == 2
    rows = {str(r.event_id): r for r in EventAuditLog.objects.all()}
    assert len(rows) == 2, "updated, not duplicated"
    for event in events:
        row = rows[event["event_id"]]
        assert (row.handling, row.rule_id, row.forwarded) == ("page_and_ticket", link_rule.pk, True)
        assert row.dead_letter_reason == "shed: alert backlog 6 > 5", "kept: it was dead-lettered once"
    alerts = sorted(a["event_id"] for a in read_stream(redis_client, streams.alerts_stream()))
    assert alerts == sorted(e["event_id"] for e in events), "alerted once each"
    assert [fields[b"reason"] for _, fields in dlq_entries(redis_client)] == [b"malformed"]


@pytest.mark.django_db(transaction=True)
def test_shedding_while_the_database_is_down_holds_one_batch_and_reads_no_more(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 5)
    apply_setting("alerter_shed_mode", "dlq")
    apply_setting("alerter_batch_size", 2)
    for _ in range(6):
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    events = [make_event(hostname=f"edge-rtr-{n:02d}") for n in range(8)]
    push(redis_client, events)
    alerter = Alerter("a1")
    alerter.refresh_rules(force=True)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        for _ in range(4):
            assert alerter.step(block_ms=10) == 0
        pending = redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"]
        assert pending <= 4, "one batch held (and what was read ahead), not a batch more per step"
        assert redis_client.xlen(streams.dlq_stream("alerter")) == 0
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    redis_client.delete(streams.alerts_stream())  # the backlog drains: no more shedding
    deadline = time.monotonic() + 20
    while EventAuditLog.objects.count() < len(events) and time.monotonic() < deadline:
        alerter.step(block_ms=10)
    alerter.flush()
    assert sorted(str(e) for e in EventAuditLog.objects.values_list("event_id", flat=True)) == sorted(
        e["event_id"] for e in events
    ), "every event audited once"
    assert redis_client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"] == 0


def test_a_second_held_batch_keeps_the_first_ones_entries_claimed(clean_pipeline):
    """Shed entries held while the writer's audit of the batch before them fails too: the alerter holds
    one batch, so the second hold must take the first one's entries with it, not drop them from memory
    (they would stop being kept claimed and wait for a takeover, costing each a delivery)."""
    from django.db import OperationalError

    alerter = Alerter("holder")
    first = Batch([(b"1-1", {}), (b"1-2", {})], claimed=True, attempts=2)
    second = Batch([(b"2-1", {}), (b"1-2", {})])
    alerter._hold(first, OperationalError("database down"))
    alerter._hold(second, OperationalError("database down"))
    held = alerter._held
    assert held is not None
    assert [entry_id for entry_id, _ in held.entries] == [b"2-1", b"1-2", b"1-1"]
    assert held.claimed
    assert held.attempts == 4  # the backoff goes on from the longer-held batch (3 after its own hold)
