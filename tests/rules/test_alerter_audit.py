"""The audit writer (rules.alerter.audit, rules.alerter.copytext): COPY text, redelivered events, rows the
database refuses and the SQLSTATE policy that tells a refused row from a database outage."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import connection

from core import contracts, streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.alerting import alert_ids, audited_ids, drain, pending
from tests.support.events import make_event, push, read_stream


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
        assert cursor.fetchone()[0] == streams.encode(event)[contracts.PAYLOAD_FIELD].decode(), "verbatim"


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


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_pipeline", "link_rule")
@pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
def test_a_bug_in_the_row_encoder_is_raised_as_itself_not_taken_for_a_database_outage(
    redis_client, monkeypatch, alerters, pipelined
):
    import rules.alerter.evaluate as evaluate_module

    def broken(rows, *args):
        raise RuntimeError("a bug in the row encoder")

    alerter = alerters("p6", pipelined=pipelined)
    push(redis_client, [make_event()])
    monkeypatch.setattr(evaluate_module, "copy_text", broken)
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


@pytest.mark.django_db
def test_a_row_refused_because_a_partition_was_attached_under_it_is_held_not_dead_lettered():
    """ADR-015: an insert that waited behind the partition manager's attach is refused with 23514 after it."""
    from django.db import DatabaseError, transaction

    from rules.alerter.audit import blames_the_data

    refusals = {}
    with connection.cursor() as cursor:  # a CHECK of the test's own, dropped with the test's transaction
        cursor.execute("ALTER TABLE rules_eventauditlog ADD CONSTRAINT test_host CHECK (hostname <> 'not-lower')")
    for label, sql in {
        # What the waiting insert meets: routed to the DEFAULT partition, which after the attach no longer
        # takes its range (now() is in this month's partition). The id is given: PostgreSQL 15 applies
        # the log's identity only to inserts through the log itself.
        "moved": "INSERT INTO rules_eventauditlog_default (id, event_id, event_time, received_at, hostname, "
        "environment, handling, raw) VALUES (1, gen_random_uuid(), now(), now(), 'h', 'prod', 'ticket_only', '{}')",
        # A CHECK constraint's refusal has the same SQLSTATE but names its constraint: the data's fault.
        "check": "INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, handling, "
        "raw) VALUES (gen_random_uuid(), now(), now(), 'not-lower', 'prod', 'ticket_only', '{}')",
        # A value the column cannot take stays the data's fault.
        "data": "INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, handling, "
        "raw) VALUES (gen_random_uuid(), now(), now(), NULL, 'prod', 'ticket_only', '{}')",
    }.items():
        with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
        refusals[label] = refused.value
    assert getattr(refusals["moved"].__cause__, "pgcode", None) == "23514"
    assert blames_the_data(refusals["moved"]) is False
    assert getattr(refusals["check"].__cause__, "pgcode", None) == "23514"
    assert blames_the_data(refusals["check"]) is True
    assert blames_the_data(refusals["data"]) is True
