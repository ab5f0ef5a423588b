"""The oldest event time ingest takes as sent is capped by the retention horizon (ADR-015)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.schema import RETENTION_MARGIN_SECONDS, Receipt, normalise

RECEIVED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def kept_as_sent(age: timedelta, **limits: float | None) -> bool:
    receipt = Receipt(RECEIVED, "req-0001", "rsyslog-dc1", **limits)
    sent = (RECEIVED - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    event, errors = normalise({"hostname": "h", "message": "m", "timestamp": sent}, receipt)
    assert errors == {}
    assert event is not None
    return not event["timestamp_corrected"]


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(days=29), True),
        (timedelta(days=30) - timedelta(seconds=RETENTION_MARGIN_SECONDS) - timedelta(seconds=1), True),
        (timedelta(days=30) - timedelta(seconds=RETENTION_MARGIN_SECONDS) + timedelta(seconds=1), False),
        (timedelta(days=200), False),  # within max_event_age, but its month would be archived and dropped
    ],
)
def test_an_event_older_than_the_retention_horizon_takes_the_receive_time(age, expected):
    assert kept_as_sent(age, max_event_age=365 * 86400, max_clock_skew=300, retention_days=30) is expected


def test_max_event_age_still_bounds_when_it_is_the_nearer_limit():
    assert kept_as_sent(timedelta(days=6), max_event_age=7 * 86400, retention_days=90)
    assert not kept_as_sent(timedelta(days=8), max_event_age=7 * 86400, retention_days=90)


def test_the_horizon_alone_bounds_when_there_is_no_max_event_age():
    assert not kept_as_sent(timedelta(days=5 * 365), retention_days=90)
    assert kept_as_sent(timedelta(days=5 * 365))
