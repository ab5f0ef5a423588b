"""Consumers left in the groups by killed alerters and forwarders are removed once idle with nothing pending."""

from __future__ import annotations

import time

import pytest

from core import contracts, streams
from delivery.lanes import Lanes
from rules.alerter import Alerter
from tests.support.events import make_event, push
from tests.support.waiting import apply_setting


def consumers(client, stream: str, group: str) -> dict[str, int]:
    """Consumer name -> entries pending for it."""
    return {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(stream, group)}


def leave_consumer(client, stream: str, group: str, name: str, *, count: int = 0) -> None:
    """What a killed worker leaves behind: a consumer that read ``count`` entries and never acknowledged them
    (``count`` 0: one that found nothing to read)."""
    if count:
        client.xreadgroup(group, name, {stream: ">"}, count=count)
    else:
        client.xgroup_createconsumer(stream, group, name)


@pytest.mark.django_db(transaction=True)
def test_an_alerter_removes_only_idle_consumers_with_nothing_pending(redis_client, clean_pipeline):
    apply_setting("consumer_forget_idle_seconds", 1)
    apply_setting("alerter_claim_idle_seconds", 1)
    stream, group = streams.ingest_stream(), contracts.ALERTERS_GROUP
    alerter = Alerter("alive")
    alerter.refresh_rules(force=True)
    push(redis_client, [make_event() for _ in range(2)])
    redis_client.xgroup_createconsumer(stream, group, "alive")  # as its first read would; idle from now on
    leave_consumer(redis_client, stream, group, "killed-empty-1")
    leave_consumer(redis_client, stream, group, "killed-empty-2")
    leave_consumer(redis_client, stream, group, "killed-holding", count=2)
    time.sleep(1.2)
    leave_consumer(redis_client, stream, group, "just-seen")  # idle for less than the threshold
    try:
        alerter.intake._last_claim = time.monotonic()  # no takeover in this step: the sweep alone is tested
        alerter.intake._swept_at = -1e9
        assert sorted(alerter.forget_dead_consumers()) == ["killed-empty-1", "killed-empty-2"]
        left = consumers(redis_client, stream, group)
        assert left == {"alive": 0, "killed-holding": 2, "just-seen": 0}, "own and pending consumers stay"

        # Once the killed consumer's entries are taken over, it has nothing pending and goes at a sweep.
        alerter.intake._last_claim = 0
        alerter.intake._swept_at = time.monotonic()  # not during the takeover step
        assert alerter.step(block_ms=10) == 2
        alerter.flush()
        assert consumers(redis_client, stream, group)["killed-holding"] == 0
        time.sleep(1.2)
        alerter.intake._swept_at = -1e9
        assert sorted(alerter.forget_dead_consumers()) == ["just-seen", "killed-holding"]
        assert consumers(redis_client, stream, group) == {"alive": 0}, "never itself, even when idle"
    finally:
        alerter.stop()


@pytest.mark.django_db(transaction=True)
def test_a_sweep_happens_at_most_once_a_minute_within_the_step(redis_client, clean_pipeline):
    apply_setting("consumer_forget_idle_seconds", 1)
    stream, group = streams.ingest_stream(), contracts.ALERTERS_GROUP
    alerter = Alerter("alive")
    try:
        leave_consumer(redis_client, stream, group, "killed")
        time.sleep(1.2)
        alerter.step(block_ms=10)  # the first step sweeps
        assert "killed" not in consumers(redis_client, stream, group)
        leave_consumer(redis_client, stream, group, "killed-later")
        time.sleep(1.2)
        alerter.step(block_ms=10)
        assert "killed-later" in consumers(redis_client, stream, group), "the next sweep is a minute later"
    finally:
        alerter.stop()


@pytest.mark.django_db(transaction=True)
def test_forwarder_lanes_remove_killed_forwarders_consumers_but_never_their_own(redis_client, clean_pipeline):
    apply_setting("consumer_forget_idle_seconds", 1)
    apply_setting("forwarder_concurrency", 2)
    stream, group = streams.alerts_stream(), contracts.FORWARDERS_GROUP
    lanes = Lanes("fw")
    try:
        redis_client.xadd(stream, streams.encode({"event_id": "held-by-a-killed-forwarder"}))
        leave_consumer(redis_client, stream, group, "killed-fw-holding", count=1)
        leave_consumer(redis_client, stream, group, "killed-fw-empty")
        leave_consumer(redis_client, stream, group, "killed-fw-empty.2")
        lanes.adjust()  # the second lane, "fw.2", in a thread
        time.sleep(1.2)
        lanes._swept_at = -1e9
        assert sorted(lanes.forget_dead_consumers()) == ["killed-fw-empty", "killed-fw-empty.2"]
        left = consumers(redis_client, stream, group)
        assert left.get("killed-fw-holding") == 1
        assert not {"killed-fw-empty", "killed-fw-empty.2"} & set(left)
        # Its own lanes stay even when idle for longer than the threshold (the first one was never stepped).
        redis_client.xgroup_createconsumer(stream, group, "fw")
        time.sleep(1.2)
        lanes._swept_at = -1e9
        lanes.forget_dead_consumers()
        assert "fw" in consumers(redis_client, stream, group)
    finally:
        lanes.close()


def test_the_sweep_script_names_only_keys_in_keys(redis_client, clean_pipeline, monkeypatch):
    """A cluster routes a script by its KEYS: a group name there is no key (CROSSSLOT). Every name the sweep
    passes as a key is the stream itself."""
    stream, group = streams.ingest_stream(), contracts.ALERTERS_GROUP
    streams.ensure_group(redis_client, stream, group)
    leave_consumer(redis_client, stream, group, "killed")
    time.sleep(0.01)  # idle for longer than the threshold (0 ms)
    calls = []
    evaluate = redis_client.eval

    def recorded_eval(script, numkeys, *args):
        calls.append(args[:numkeys])
        return evaluate(script, numkeys, *args)

    monkeypatch.setattr(redis_client, "eval", recorded_eval)
    assert streams.forget_idle_consumers(redis_client, stream, group, idle_seconds=0) == ["killed"]
    assert calls == [(stream,)]
