"""The alerter step against real Redis and PostgreSQL."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from django.db import connection

from core import streams
from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, DevHost, EventAuditLog
from tests.support.events import make_event, push, read_stream
from tests.support.waiting import apply_setting, wait_for

OPS = Actor.cli("ops")


@pytest.fixture
def link_rule(db):
    return services.create(
        AlertRule, actor=OPS, name="link down", match_type="contains", match_string="changed state to down",
        priority=10, team_assignment="network-ops", severity="major", dev_handling="ignore",
    )  # fmt: skip


@pytest.fixture
def alerters():
    """Make alerters that are stopped after the test: a pipelined one's audit writer thread holds a
    database connection of its own until then."""
    made: list[Alerter] = []

    def make(consumer: str, **kwargs) -> Alerter:
        made.append(Alerter(consumer, **kwargs))
        return made[-1]

    yield make
    for alerter in made:
        alerter.stop()


def drain(alerter: Alerter, rounds: int = 20) -> int:
    total = 0
    for _ in range(rounds):
        done = alerter.step(block_ms=10)
        total += done
        if not done and alerter.idle:
            break
    return total


def pending(client) -> int:
    return client.xpending(streams.ingest_stream(), streams.ALERTERS_GROUP)["pending"]


@pytest.mark.django_db(transaction=True)
def test_matched_events_are_audited_alerted_and_acknowledged(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    events = [make_event(hostname=f"core-rtr-{i:02d}") for i in range(5)]
    push(redis_client, events)
    assert drain(alerter) == 5
    rows = {str(r.event_id): r for r in EventAuditLog.objects.all()}
    assert set(rows) == {e["event_id"] for e in events}
    row = rows[events[0]["event_id"]]
    assert (row.environment, row.rule_id, row.handling, row.team, row.forwarded, row.alert_severity) == (
        "prod", link_rule.pk, "page_and_ticket", "network-ops", True, "major",
    )  # fmt: skip
    assert row.raw["correlation_id"] == events[0]["correlation_id"]
    alerts = read_stream(redis_client, streams.alerts_stream())
    assert sorted(a["event_id"] for a in alerts) == sorted(e["event_id"] for e in events)
    alert = next(a for a in alerts if a["event_id"] == events[0]["event_id"])
    assert alert["signature"] == f"core-rtr-00:{link_rule.pk}::Gi0/1", "the default signature names the interface"
    assert (alert["rule_id"], alert["team"], alert["severity"], alert["handling"]) == (
        link_rule.pk, "network-ops", "major", "page_and_ticket",
    )  # fmt: skip
    assert alert["correlation_id"] == events[0]["correlation_id"]
    assert alert["event_time"] == events[0]["timestamp"]
    assert "ingested_by" not in alert
    assert pending(redis_client) == 0
    assert redis_client.xlen(streams.ingest_stream()) == 0, "acknowledged entries are trimmed"


@pytest.mark.django_db(transaction=True)
def test_unmatched_ignored_and_dev_events_are_audited_without_alerts(redis_client, clean_pipeline, link_rule):
    services.create(DevHost, actor=OPS, hostname="lab-rtr-01")
    services.create(
        AlertRule, actor=OPS, name="noise", match_type="contains", match_string="CONFIG_I", prod_handling="ignore"
    )
    unmatched = make_event(message="all quiet")
    ignored = make_event(message="%SYS-5-CONFIG_I: Configured from console")
    dev = make_event(hostname="lab-rtr-01")
    push(redis_client, [unmatched, ignored, dev])
    drain(Alerter("a1"))
    handling = {str(r.event_id): (r.handling, r.environment, r.forwarded) for r in EventAuditLog.objects.all()}
    assert handling == {
        unmatched["event_id"]: ("unhandled", "prod", False),
        ignored["event_id"]: ("ignore", "prod", False),
        dev["event_id"]: ("ignore", "dev", False),
    }
    assert redis_client.xlen(streams.alerts_stream()) == 0


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_event_is_audited_and_alerted_once(redis_client, clean_pipeline, link_rule):
    event = make_event()
    push(redis_client, [event, event])
    drain(Alerter("a1"))
    push(redis_client, [event])
    drain(Alerter("a2"))
    assert EventAuditLog.objects.filter(event_id=event["event_id"]).count() == 1
    assert len(read_stream(redis_client, streams.alerts_stream())) == 1


@pytest.mark.django_db(transaction=True)
def test_a_batch_mixing_redelivered_and_new_events_audits_each_once(redis_client, clean_pipeline, link_rule):
    from rules import metrics

    first = [make_event() for _ in range(3)]
    push(redis_client, first)
    drain(Alerter("a1"))
    before = metrics.AUDIT_REDELIVERED_BATCHES._value.get()
    second = [make_event(), first[1], make_event()]
    push(redis_client, second)
    drain(Alerter("a2"))
    assert metrics.AUDIT_REDELIVERED_BATCHES._value.get() == before + 1, "the COPY met the audited event"
    audited = [str(e) for e in EventAuditLog.objects.values_list("event_id", flat=True)]
    assert sorted(audited) == sorted({e["event_id"] for e in first + second})
    assert len(read_stream(redis_client, streams.alerts_stream())) == 5
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_text_and_raw_event_are_stored_exactly_as_received(redis_client, clean_pipeline, link_rule):
    awkward = "changed state to down\tcol2\nline2\r\\N back\\slash \\t literal, \u00e9t\u00e9 \U0001f525"
    event = make_event(message=awkward, extra={"note": 'quote " and \\ and \t tab'})
    push(redis_client, [event])
    drain(Alerter("a1"))
    row = EventAuditLog.objects.get()
    assert row.message == awkward
    assert row.raw == event
    with connection.cursor() as cursor:
        cursor.execute("SELECT raw::text FROM rules_eventauditlog WHERE event_id = %s", [event["event_id"]])
        assert cursor.fetchone()[0] == streams.encode(event)[streams.PAYLOAD_FIELD].decode(), "verbatim"


@pytest.mark.django_db(transaction=True)
def test_poison_entries_go_to_the_dlq_with_reason_error_and_payload(redis_client, clean_pipeline, link_rule):
    good = make_event()
    redis_client.xadd(streams.ingest_stream(), {"e": b"{not json"})
    redis_client.xadd(streams.ingest_stream(), {"something": "else"})
    push(redis_client, [good, make_event(hostname="")])
    drain(Alerter("a1"))
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert len(dlq) == 3
    reasons = [fields[b"reason"] for _, fields in dlq]
    assert reasons == [b"malformed", b"malformed", b"malformed"]
    assert dlq[0][1][b"e"] == b"{not json"
    assert b"event has no hostname" in dlq[2][1][b"error"]
    assert all(fields[b"source_id"] and fields[b"failed_at"] for _, fields in dlq)
    assert EventAuditLog.objects.count() == 1
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_entries_of_a_crashed_alerter_are_taken_over_exactly_once(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_claim_idle_seconds", 1)
    survivor = Alerter("survivor")
    events = [make_event() for _ in range(4)]
    push(redis_client, events)
    # "crashed": read the entries and never acknowledge them
    redis_client.xreadgroup(streams.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=10)
    assert survivor.step(block_ms=10) == 0, "entries of a live consumer are not taken before the timeout"
    time.sleep(1.1)
    survivor._last_claim = 0
    assert drain(survivor) == 4
    assert EventAuditLog.objects.count() == 4
    assert len(read_stream(redis_client, streams.alerts_stream())) == 4
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_an_entry_delivered_too_often_is_dead_lettered(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_claim_idle_seconds", 1)
    apply_setting("alerter_max_deliveries", 1)
    survivor = Alerter("next")
    push(redis_client, [make_event()])
    redis_client.xreadgroup(streams.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=10)
    time.sleep(1.1)
    drain(survivor)
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"max_deliveries"]
    assert EventAuditLog.objects.get().handling == "dead_lettered", "audited as dead-lettered, not matched"


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_loses_nothing(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    alerter.refresh_rules(force=True)
    events = [make_event() for _ in range(3)]
    push(redis_client, events)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        assert alerter.step(block_ms=10) == 0
        assert alerter._held is not None
        assert pending(redis_client) == 3, "nothing is acknowledged while the database is down"
        assert redis_client.xlen(streams.alerts_stream()) == 0
        alerter._held.retry_at = 0
        assert alerter.step(block_ms=10) == 0, "still down: kept again"
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    alerter._held.retry_at = 0
    assert alerter.step(block_ms=10) == 3
    assert EventAuditLog.objects.count() == 3
    assert len(read_stream(redis_client, streams.alerts_stream())) == 3
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_a_flood_of_unmatched_events_raises_one_meta_alert_per_host_and_window(redis_client, clean_pipeline):
    apply_setting("unhandled_threshold", 5)
    from rules.models import DeviceTeam

    services.create(DeviceTeam, actor=OPS, hostname="noisy-sw-01", team_name="campus")
    alerter = Alerter("a1")
    push(
        redis_client, [make_event(hostname="noisy-sw-01", message=f"port {i} flapped on 10.0.0.{i}") for i in range(8)]
    )
    push(redis_client, [make_event(hostname="quiet-sw-01", message="odd thing") for _ in range(2)])
    drain(alerter)
    push(redis_client, [make_event(hostname="noisy-sw-01", message="port 99 flapped on 10.0.0.99") for _ in range(5)])
    drain(alerter)
    alerts = read_stream(redis_client, streams.alerts_stream())
    assert len(alerts) == 1
    meta = alerts[0]
    assert (meta["kind"], meta["hostname"], meta["team"]) == ("flood", "noisy-sw-01", "campus")
    assert meta["details"]["count"] >= 5
    assert meta["details"]["top_templates"][0]["template"] == "port <n> flapped on <ip>"
    assert EventAuditLog.objects.filter(handling="unhandled").count() == 15


@pytest.mark.django_db(transaction=True)
def test_a_rule_edited_in_the_admin_applies_in_a_running_alerter_within_a_second(
    redis_client, clean_pipeline, link_rule, admin_client_alice
):
    alerter = Alerter("a1")
    alerter.start_rule_listener()
    try:
        alerter.refresh_rules(force=True)
        assert wait_for(lambda: (alerter.step(block_ms=10), not alerter.rules_changed.is_set())[1], timeout=3)
        form = {
            "name": "link down", "description": "", "is_active": "on", "priority": "10", "match_type": "contains",
            "match_string": "changed state to down", "trap_oid": "", "syslog_severity": "",
            "prod_handling": "ticket_only", "dev_handling": "ignore", "team_assignment": "noc", "severity": "minor",
            "change_reason": "tickets only",
        }  # fmt: skip
        response = admin_client_alice.post(f"/admin/rules/alertrule/{link_rule.pk}/change/", form)
        assert response.status_code == 302
        changed_at = time.monotonic()
        assert wait_for(
            lambda: (alerter.step(block_ms=10), alerter.ruleset.match("x", "changed state to down").team == "noc")[1],
            timeout=1.0,
        )
        assert time.monotonic() - changed_at < 1.0
    finally:
        alerter.stop()


@pytest.mark.django_db(transaction=True)
def test_load_shedding_moves_oldest_entries_to_the_dlq_in_dlq_mode(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 5)
    for _ in range(6):
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    push(redis_client, [make_event() for _ in range(3)])
    alerter = Alerter("a1")
    assert alerter.step(block_ms=10) == 0, "deferring by default: nothing consumed"
    assert redis_client.xlen(streams.ingest_stream()) == 3
    apply_setting("alerter_shed_mode", "dlq")
    alerter.step(block_ms=10)
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"shed"] * 3
    assert b"alert backlog 6 > 5" in dlq[0][1][b"error"]
    assert pending(redis_client) == 0
    rows = EventAuditLog.objects.all()
    assert [(r.handling, r.dead_letter_reason) for r in rows] == [("dead_lettered", "shed: alert backlog 6 > 5")] * 3


# --- regressions found in review ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_refuses_goes_alone_to_the_dlq(redis_client, clean_pipeline, link_rule):
    good = [make_event() for _ in range(3)]
    bad = make_event(message="changed state to down\u0000", extra={"note": "nul\u0000inside"})
    push(redis_client, [good[0], bad, *good[1:]])
    drain(Alerter("a1"))
    assert sorted(str(r.event_id) for r in EventAuditLog.objects.all()) == sorted(e["event_id"] for e in good)
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"processing_error"]
    assert streams.decode(dlq[0][1])["event_id"] == bad["event_id"]
    assert len(read_stream(redis_client, streams.alerts_stream())) == 3
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_nothing_is_matched_before_the_rules_have_loaded(redis_client, clean_pipeline, link_rule):
    push(redis_client, [make_event()])
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})
    try:
        alerter = Alerter("a1")
        assert alerter.step(block_ms=10) == 0
        assert not alerter.rules_loaded
        assert redis_client.xlen(streams.ingest_stream()) == 1
        assert pending(redis_client) == 0, "not even read while the rules are unknown"
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    drain(alerter)
    assert EventAuditLog.objects.get().handling == "page_and_ticket", "matched against the real rules"


def test_more_acknowledgements_than_lua_can_unpack_in_one_call(redis_client, clean_pipeline):
    alerter = Alerter("a1")
    push(redis_client, [make_event() for _ in range(9000)])
    entries = redis_client.xreadgroup(streams.ALERTERS_GROUP, "a1", {streams.ingest_stream(): ">"}, count=9000)
    ids = [entry_id for entry_id, _ in entries[0][1]]
    assert len(ids) == 9000
    alerter._publish_and_ack([], ids)
    assert pending(redis_client) == 0
    assert redis_client.xlen(streams.ingest_stream()) == 0


@pytest.mark.django_db(transaction=True)
def test_a_pending_entry_deleted_meanwhile_does_not_block_takeover(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_claim_idle_seconds", 1)
    survivor = Alerter("survivor")
    events = [make_event() for _ in range(3)]
    ids = push(redis_client, events)
    redis_client.xreadgroup(streams.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=10)
    redis_client.xdel(streams.ingest_stream(), ids[1])
    time.sleep(1.1)
    assert drain(survivor) == 2
    assert EventAuditLog.objects.count() == 2
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_the_backlog_counts_only_unfinished_entries(redis_client, clean_pipeline, link_rule):
    alerter = Alerter("a1")
    push(redis_client, [make_event()])
    redis_client.xreadgroup(streams.ALERTERS_GROUP, "slow", {streams.ingest_stream(): ">"}, count=1)
    push(redis_client, [make_event() for _ in range(5)])
    drain(alerter)
    assert redis_client.xlen(streams.ingest_stream()) == 1, "finished entries leave even behind a pending one"


@pytest.mark.django_db(transaction=True)
def test_shedding_with_an_empty_ingest_stream_does_not_block(redis_client, clean_pipeline, link_rule):
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 3)
    apply_setting("alerter_shed_mode", "dlq")
    for _ in range(5):
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    alerter = Alerter("a1")
    started = time.monotonic()
    assert alerter.step(block_ms=10) == 0
    assert time.monotonic() - started < 2


def test_copy_text_escapes_every_field_that_needs_it_and_marks_nulls():
    from rules.alerter import copy_text

    clean = ("a", None, 3, True, "b c")
    tricky = ("\\N", None, "tab\there", False, "line\nbreak\r\\")
    assert copy_text([clean]) == b"a\t\\N\t3\tt\tb c\n"
    assert copy_text([tricky]) == b"\\\\N\t\\N\ttab\\there\tf\tline\\nbreak\\r\\\\\n"
    assert copy_text([clean, tricky]) == copy_text([clean]) + copy_text([tricky])


def test_audit_rows_are_formatted_exactly_as_the_general_copy_line_formats_them():
    import orjson

    from rules.alerter import audit_copy_line, copy_line

    def row(message: str, team: str = "network-ops", rule_id: int | None = 7, severity: int | None = 3) -> tuple:
        raw = orjson.dumps({"hostname": "rtr-1", "message": message}).decode()
        return (
            "0190a2b4-0000-7000-8000-000000000001", "2026-12-02T08:00:00+00:00", "2026-12-02T08:00:01+00:00",
            "rtr-1", "prod", rule_id, "page_only", team, True, "major", severity, message, "", "syslog",
            "0190a2b40000700080000000000000aa", raw,
        )  # fmt: skip

    rows = [
        row("Interface Gi0/1 changed state to down"),
        row("no rule, no severity", rule_id=None, severity=None),
        row("tab\there and a line\nbreak"),  # escaped in raw: the general way
        row('a "quoted" word and a back\\slash'),
        row("plain text", team="night\tshift"),  # a tab outside the event's JSON
        row("ünïcödé ✓ and emoji 🚨"),
    ]
    for audit_row in rows:
        assert audit_copy_line(audit_row) == copy_line(audit_row)
    assert "tab\\there and a line\\nbreak" in audit_copy_line(rows[2]), "escaped for COPY"


# --- pipelined mode (run_alerter): a batch is finished while the next one is audited ------------------


def alert_ids(client) -> list[str]:
    return [alert["event_id"] for alert in read_stream(client, streams.alerts_stream())]


def drain_and_check_each_alerted_once(alerter: Alerter, client, events: list[dict]) -> None:
    drain(alerter)
    alerter.stop()
    assert sorted(alert_ids(client)) == sorted(e["event_id"] for e in events)
    assert EventAuditLog.objects.count() == len(events)
    assert pending(client) == 0


def audited_ids() -> set[str]:
    return {str(event_id) for event_id in EventAuditLog.objects.values_list("event_id", flat=True)}


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_batch_is_audited_while_the_next_is_evaluated_and_finished_a_turn_later(
    redis_client, clean_pipeline, link_rule, alerters
):
    apply_setting("alerter_batch_size", 10)
    alerter = alerters("p1", pipelined=True)
    events = [make_event() for _ in range(40)]
    ids = [e["event_id"] for e in events]
    push(redis_client, events)

    assert alerter.step(block_ms=0) == 10, "evaluated and handed to the audit writer"
    assert alert_ids(redis_client) == []
    assert pending(redis_client) == 20, "the next batch is read ahead"
    assert not alerter.idle

    assert alerter.step(block_ms=0) == 10
    assert set(ids[:10]) <= audited_ids(), "the first batch's audit is committed once the second is evaluated"
    assert alert_ids(redis_client) == [], "its alerts wait for the next turn"
    assert pending(redis_client) == 30

    assert alerter.step(block_ms=0) == 10
    assert set(ids[:20]) <= audited_ids()
    assert alert_ids(redis_client) == ids[:10], "alerted and acknowledged only after its audit committed"
    assert pending(redis_client) == 30, "the first batch is acknowledged"

    assert alerter.step(block_ms=0) == 10
    assert alert_ids(redis_client) == ids[:20]
    started = time.monotonic()
    assert alerter.step(block_ms=5000) == 0
    assert time.monotonic() - started < 2.5, "nothing more: the batches in hand are finished without blocking"
    assert alert_ids(redis_client) == ids
    assert pending(redis_client) == 0
    assert alerter.idle
    assert audited_ids() == set(ids)


@pytest.mark.django_db(transaction=True)
def test_pipelined_stop_finishes_the_batch_in_hand(redis_client, clean_pipeline, link_rule, alerters):
    alerter = alerters("p2", pipelined=True)
    push(redis_client, [make_event() for _ in range(5)])
    assert alerter.step(block_ms=0) == 5
    assert pending(redis_client) == 5
    alerter.stop()
    assert len(alert_ids(redis_client)) == 5
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_a_batch_whose_alerts_fail_stays_pending_and_its_takeover_alerts_each_event_once(
    redis_client, clean_pipeline, link_rule, pipelined, alerters
):
    from prometheus_client import REGISTRY

    from rules.alerter import dedup_key

    def failures() -> float:
        return REGISTRY.get_sample_value("mutt_alerter_finish_failures_total") or 0.0

    apply_setting("alerter_claim_idle_seconds", 1)
    first = alerters("broken", pipelined=pipelined)
    events = [make_event() for _ in range(6)]
    buckets = {dedup_key(event["received_at"]) for event in events}
    for bucket in buckets:
        redis_client.set(bucket, "not a hash")  # the publish script now fails on its first alert
    push(redis_client, events)
    before = failures()
    drain(first)
    first.flush()

    assert EventAuditLog.objects.count() == 6, "the audit is committed"
    assert failures() == before + 1
    assert alert_ids(redis_client) == []
    assert pending(redis_client) == 6, "nothing acknowledged"

    redis_client.delete(*buckets)
    time.sleep(1.1)
    drain_and_check_each_alerted_once(alerters("takeover", pipelined=pipelined), redis_client, events)


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_database_outage_holds_every_batch_in_hand_and_takes_no_more_until_it_ends(
    redis_client, clean_pipeline, link_rule, alerters
):
    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p7", pipelined=True)
    events = [make_event() for _ in range(30)]
    ids = [e["event_id"] for e in events]
    push(redis_client, events[:5])
    drain(alerter)
    assert audited_ids() == set(ids[:5]), "the writer thread has its own connection open"
    push(redis_client, events[5:])

    saved = dict(connection.settings_dict)
    with connection.cursor() as cursor:  # PostgreSQL ends every other session: the writer's too
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connection.close()
    connection.settings_dict.update({"HOST": "/nonexistent-socket-dir", "PORT": "1"})  # and is unreachable
    try:
        assert alerter.step(block_ms=10) == 5, "evaluated and handed to the writer; the next batch read ahead"
        assert alerter.step(block_ms=10) == 0, "the audit failed: nothing more is taken"
        held = alerter._held
        assert held is not None
        assert sorted(streams.decode(fields)["event_id"] for _, fields in held.entries) == sorted(ids[5:20]), (
            "held: the batch the writer had, the one evaluated behind it, and the one read ahead"
        )
        assert pending(redis_client) == 15, "nothing of them is acknowledged"
        assert alert_ids(redis_client) == ids[:5]

        for attempt in (2, 3):
            alerter._held.retry_at = 0
            assert alerter.step(block_ms=10) == 0
            assert alerter._held is not None, "still down: held again"
            assert alerter._held.attempts == attempt
            assert len(alerter._held.entries) == 15, "retried where it is: nothing new read meanwhile"
            assert pending(redis_client) == 15
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    alerter._held.retry_at = 0
    drain(alerter)
    alerter.flush()
    assert audited_ids() == set(ids)
    assert sorted(alert_ids(redis_client)) == sorted(ids), "each event alerted once"
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_stop_also_finishes_the_entries_read_ahead(redis_client, clean_pipeline, link_rule, alerters):
    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p8", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    assert alerter.step(block_ms=0) == 5
    assert pending(redis_client) == 10, "one batch in the writer, the next read ahead"
    alerter.stop()
    assert audited_ids() == {e["event_id"] for e in events}
    assert sorted(alert_ids(redis_client)) == sorted(e["event_id"] for e in events)
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_read_ahead_redis_refuses_is_made_when_its_turn_comes(
    redis_client, clean_pipeline, link_rule, alerters, caplog
):
    import redis

    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p9", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    send = alerter._reader.send
    calls = []

    def second_send_fails(*command):
        calls.append(command)
        if len(calls) == 2:
            raise redis.ConnectionError("connection lost")
        send(*command)

    alerter._reader.send = second_send_fails
    assert alerter.step(block_ms=0) == 5, "the batch taken goes on"
    assert "could not read the next batch ahead" in caplog.text
    drain(alerter)
    alerter.stop()
    assert audited_ids() == {e["event_id"] for e in events}
    assert sorted(alert_ids(redis_client)) == sorted(e["event_id"] for e in events)
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
def test_pipelined_deferring_finishes_the_entries_already_read_ahead_then_takes_no_more(
    redis_client, clean_pipeline, link_rule, alerters
):
    apply_setting("alerter_batch_size", 5)
    alerter = alerters("p10", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    assert alerter.step(block_ms=0) == 5
    apply_setting("alerter_queue_warn_threshold", 2)
    apply_setting("alerter_queue_shed_threshold", 5)
    for _ in range(50):  # the alert backlog is now far above the shed threshold (defer mode)
        redis_client.xadd(streams.alerts_stream(), {"e": b"{}"})
    time.sleep(0.15)  # past the time a clear backlog is trusted

    assert alerter.step(block_ms=0) == 5, "the batch read ahead is this alerter's: finished, not left unread"
    assert alerter.step(block_ms=0) == 0
    assert alerter.idle
    assert audited_ids() == {e["event_id"] for e in events}
    assert pending(redis_client) == 0
    push(redis_client, [make_event() for _ in range(3)])
    assert alerter.step(block_ms=0) == 0, "deferring: nothing new is consumed"
    assert redis_client.xlen(streams.ingest_stream()) == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_pipeline", "link_rule")
def test_flood_counts_redis_refuses_do_not_hold_back_the_alerts_and_acknowledgement(redis_client, monkeypatch, caplog):
    import redis
    from prometheus_client import REGISTRY

    def failures() -> float:
        return REGISTRY.get_sample_value("mutt_alerter_finish_failures_total") or 0.0

    alerter = Alerter("c1")
    matched, unmatched = make_event(), make_event(message="nothing explains this")
    push(redis_client, [matched, unmatched])

    def refused(*args, **kwargs):
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(alerter._count_later, "send", refused)
    before = failures()
    assert drain(alerter) == 2
    assert alert_ids(redis_client) == [matched["event_id"]]
    assert pending(redis_client) == 0, "acknowledged"
    assert failures() == before, "not counted as a batch left pending"
    assert "could not count 1 unmatched events for flood detection" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_publish_script_that_fails_halfway_marks_no_event_as_alerted(redis_client, clean_pipeline):
    import redis

    from rules.alerter import dedup_key

    alerter = Alerter("p3")
    alerts = streams.alerts_stream()
    redis_client.delete(alerts)
    redis_client.set(alerts, "not a stream")  # the script's XADD is refused
    event = make_event()
    bucket = dedup_key(event["received_at"])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        alerter._publish_and_ack([(bucket, event["event_id"], b"{}")], [])
    assert not redis_client.hexists(bucket, event["event_id"]), "a redo must not skip this alert"
    redis_client.delete(alerts)
    assert alerter._publish_and_ack([(bucket, event["event_id"], b"{}")], []) == 1


@pytest.mark.django_db(transaction=True)
def test_pipelined_a_failure_while_the_next_batch_starts_still_finishes_the_previous_one(
    redis_client, clean_pipeline, link_rule, monkeypatch, alerters
):
    import redis

    apply_setting("alerter_batch_size", 5)
    apply_setting("alerter_claim_idle_seconds", 1)
    alerter = alerters("p4", pipelined=True)
    events = [make_event() for _ in range(10)]
    push(redis_client, events)
    # A crashed alerter took the first half; the second half is read by ours.
    redis_client.xreadgroup(streams.ALERTERS_GROUP, "crashed", {streams.ingest_stream(): ">"}, count=5)
    assert alerter.step(block_ms=0) == 5
    assert pending(redis_client) == 10, "our batch is handed to the writer, not yet acknowledged"

    time.sleep(1.1)
    alerter._last_claim = 0
    calls = []

    def lost_connection(*args, **kwargs):  # Redis unreachable for the takeover's delivery counts
        calls.append(1)
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(alerter.client, "xpending_range", lost_connection)
    with pytest.raises(redis.ConnectionError):
        alerter.step(block_ms=0)  # takes the crashed alerter's entries over, then fails on them
    assert calls, "the takeover was attempted"
    assert alert_ids(redis_client) == [e["event_id"] for e in events[5:]], "the previous batch was still finished"
    assert pending(redis_client) == 5

    monkeypatch.undo()
    time.sleep(1.1)
    alerter._last_claim = 0
    drain_and_check_each_alerted_once(alerter, redis_client, events)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_an_entry_that_cannot_even_be_described_goes_to_the_dlq_not_into_an_outage(
    redis_client, clean_pipeline, link_rule, pipelined, alerters
):
    push(redis_client, [make_event()])
    redis_client.xadd(streams.ingest_stream(), {b"\xff\xfe": b"\xff"})  # no payload, field name not UTF-8
    push(redis_client, [make_event()])
    alerter = alerters("p5", pipelined=pipelined)
    drain(alerter)
    alerter.stop()
    assert alerter._held is None, "not mistaken for a database outage"
    assert EventAuditLog.objects.count() == 2
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"malformed"]
    assert pending(redis_client) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_pipeline", "link_rule")
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_a_bug_in_the_row_encoder_is_raised_as_itself_not_taken_for_a_database_outage(
    redis_client, monkeypatch, alerters, pipelined
):
    import rules.alerter as alerter_module

    def broken(rows, *args):
        raise RuntimeError("a bug in the row encoder")

    alerter = alerters("p6", pipelined=pipelined)
    push(redis_client, [make_event()])
    monkeypatch.setattr(alerter_module, "copy_text", broken)
    with pytest.raises(RuntimeError, match="a bug in the row encoder"):
        alerter.step(block_ms=0)
    assert alerter._held is None, "not held as if the database were down"
    assert EventAuditLog.objects.count() == 0
    assert pending(redis_client) == 1, "left pending for a takeover, not acknowledged"


@contextmanager
def read_only_database():
    """Every new session of the test database is read-only, as on a primary a failover demoted: writes
    fail with SQLSTATE 25006 (psycopg2's InternalError), not with a connection error."""
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    connection.close()
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = off")
            cursor.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_pipeline", "link_rule")
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_a_read_only_database_holds_the_batch_like_an_outage_instead_of_dead_lettering_it(
    redis_client, alerters, pipelined
):
    from prometheus_client import REGISTRY

    def database_errors() -> float:
        return REGISTRY.get_sample_value("mutt_alerter_db_errors_total") or 0.0

    alerter = alerters("ro", pipelined=pipelined)
    alerter.refresh_rules(force=True)
    events = [make_event() for _ in range(3)]
    ids = [e["event_id"] for e in events]
    push(redis_client, events)
    before = database_errors()
    with read_only_database():
        for _ in range(3):  # pipelined: handed to the writer, then its failure lands
            alerter.step(block_ms=10)
            if alerter._held is not None:
                break
        assert alerter._held is not None, "held for a retry"
        assert len(alerter._held.entries) == 3
        assert database_errors() == before + 1
        for _ in range(2):
            alerter._held.retry_at = 0
            assert alerter.step(block_ms=10) == 0
            assert alerter._held is not None, "still read-only: held again"
        assert redis_client.xlen(streams.dlq_stream("alerter")) == 0, "no event is blamed for the database's state"
        assert pending(redis_client) == 3, "nothing acknowledged"
        assert alert_ids(redis_client) == []
        assert EventAuditLog.objects.count() == 0
    alerter._held.retry_at = 0
    drain(alerter)
    alerter.flush()
    assert audited_ids() == set(ids)
    assert sorted(alert_ids(redis_client)) == sorted(ids)
    assert pending(redis_client) == 0
    assert redis_client.xlen(streams.dlq_stream("alerter")) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_pipeline", "link_rule")
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_a_value_of_the_wrong_json_type_is_the_rows_fault_not_an_outage(redis_client, alerters, pipelined):
    """A producer other than ingest sent an epoch number as the timestamp: the COPY and the INSERT of
    that row both fail with a data exception (class 22), so the row goes to the DLQ and the batch is not
    held. (Sent as a number, the INSERT would fail with a type mismatch, 42804, the database's "state".)"""
    good = [make_event() for _ in range(3)]
    bad = make_event(timestamp=1_700_000_000)
    push(redis_client, [good[0], bad, *good[1:]])
    alerter = alerters("wt", pipelined=pipelined)
    drain(alerter)
    alerter.flush()
    assert alerter._held is None
    assert audited_ids() == {e["event_id"] for e in good}
    dlq = redis_client.xrange(streams.dlq_stream("alerter"))
    assert [fields[b"reason"] for _, fields in dlq] == [b"processing_error"]
    assert streams.decode(dlq[0][1])["event_id"] == bad["event_id"]
    assert dlq[0][1][b"error"].startswith(b"DataError: "), "a data exception (SQLSTATE class 22)"
    assert pending(redis_client) == 0
