"""Helpers of the alerter's tests: drive an alerter until it is idle, and read what it did."""

from __future__ import annotations

from core import contracts, streams
from rules.alerter import Alerter
from rules.models import EventAuditLog
from tests.support.events import read_stream


def drain(alerter: Alerter, rounds: int = 20) -> int:
    total = 0
    for _ in range(rounds):
        done = alerter.step(block_ms=10)
        total += done
        if not done and alerter.idle:
            break
    return total


def pending(client) -> int:
    return client.xpending(streams.ingest_stream(), contracts.ALERTERS_GROUP)["pending"]


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
