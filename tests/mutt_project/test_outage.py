"""The outage reporter: one line when a dependency goes down, one a minute while it stays down, one when
it is back; failures that are not outages are not its business."""

from __future__ import annotations

import logging

import psycopg2
import pytest
import redis
from django.db import DataError, OperationalError

from core import outage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_change_of_state(caplog):
    clock = Clock()
    reporter = outage.OutageReporter("Redis", clock=clock)
    caplog.set_level(logging.INFO, logger="mutt.outage")
    reporter.recovered()  # was never down: nothing to say
    for _ in range(59):  # a minute of retries, one a second
        reporter.failed(redis.ConnectionError("Error 111 connecting to\n  localhost:6379"), doing="holding 3 entries")
        clock.now += 1
    clock.now += 1
    reporter.failed(redis.ConnectionError("refused"))
    for _ in range(30):
        reporter.failed(redis.TimeoutError("timed out"))
    clock.now += 5
    reporter.recovered()
    reporter.recovered()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Redis unavailable (ConnectionError: Error 111 connecting to localhost:6379); holding 3 entries; "
                    "retrying"),
        ("WARNING", "Redis still unavailable after 60s (60 failures; last: ConnectionError: refused)"),
        ("INFO", "Redis available again after 65s (90 failures)"),
    ]  # fmt: skip
    assert [r.outage for r in caplog.records] == ["down", "still_down", "back"]
    caplog.clear()
    reporter.failed(redis.ConnectionError("again"))
    assert [r.outage for r in caplog.records] == ["down"], "a new outage is reported anew"


@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (redis.ConnectionError("x"), "Redis"),
        (redis.TimeoutError("x"), "Redis"),
        (redis.BusyLoadingError("x"), "Redis"),
        (OperationalError("x"), "PostgreSQL"),
        (psycopg2.OperationalError("x"), "PostgreSQL"),
        (redis.ResponseError("NOGROUP x"), None),
        (DataError("x"), None),
        (ValueError("x"), None),
    ],
)
def test_which_failures_are_outages(error, dependency):
    reporter = outage.reporter_for(error)
    assert (reporter.name if reporter else None) == dependency


def test_an_error_raised_from_an_outage_is_one():
    wrapped = RuntimeError("could not read the settings")
    wrapped.__cause__ = redis.ConnectionError("refused")
    assert outage.reporter_for(wrapped) is outage.REDIS
