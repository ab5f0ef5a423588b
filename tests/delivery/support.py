"""Helpers for driving forwarders in tests."""

from __future__ import annotations

from delivery.forwarder import Forwarder
from devtools.mock_moog import MockMoog
from tests.support.waiting import wait_for


def deliver_all(forwarder: Forwarder, timeout: float = 15.0) -> None:
    def done() -> bool:
        forwarder.step(block_ms=10)
        return forwarder.idle()

    assert wait_for(done, timeout=timeout, interval=0.005), "alerts left undelivered"


def recorded(moog: MockMoog) -> list[dict]:
    return [record["event"] for record in moog.events()]
