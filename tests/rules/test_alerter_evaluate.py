"""Decoding and matching entries (rules.alerter.evaluate): outcomes without alerts, and entries that are
no event, against real Redis and PostgreSQL."""

from __future__ import annotations

import pytest

from core import streams
from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule, DevHost, EventAuditLog
from tests.support.alerting import drain, pending
from tests.support.events import make_event, push

OPS = Actor.cli("ops")


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
