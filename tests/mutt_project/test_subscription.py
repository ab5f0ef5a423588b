"""The one pub/sub subscription loop (core.subscription) that the settings subscriber and the alerter's rule
listener both run, against real Redis: announcements, restarts, outages and the stop flag."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import outage, subscription
from core.redis import key
from tests.support.waiting import wait_for

log = logging.getLogger("mutt.test")


class Listener:
    """``subscription.listen`` in a thread of its own, counting what it was told."""

    def __init__(self, client: Callable[[], redis.Redis], on_message: Callable[[], None] | None = None) -> None:
        self.channel = key("test-subscription", uuid.uuid4().hex)
        self.stop = threading.Event()
        self.subscribed = self.messages = self.lost = 0
        self._on_message = on_message
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()

    def _run(self, client: Callable[[], redis.Redis]) -> None:
        subscription.listen(
            self.channel, client=client, stop=self.stop, on_message=self._message, on_subscribed=self._subscribed,
            on_lost=self._lost, name="test subscription", log=log, poll_seconds=0.05,
        )  # fmt: skip

    def _subscribed(self) -> None:
        self.subscribed += 1

    def _message(self) -> None:
        self.messages += 1
        if self._on_message is not None:
            self._on_message()

    def _lost(self) -> None:
        self.lost += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


def listening(client: redis.Redis, listener: Listener, subscriptions: int = 1) -> bool:
    return wait_for(lambda: listener.subscribed == subscriptions and client.pubsub_numsub(listener.channel)[0][1] == 1)


def test_each_announcement_is_heard_and_a_stop_is_noticed_within_a_poll(redis_client):
    listener = Listener(lambda: redis_client)
    try:
        assert listening(redis_client, listener)
        redis_client.publish(listener.channel, "changed")
        redis_client.publish(listener.channel, "changed again")
        assert wait_for(lambda: listener.messages == 2)
    finally:
        listener.close()
    assert not listener.thread.is_alive(), "stopped within the join's timeout"
    assert listener.lost == 0
    assert wait_for(lambda: redis_client.pubsub_numsub(listener.channel)[0][1] == 0), "unsubscribed on the way out"


def test_an_error_in_a_callback_restarts_the_subscription_instead_of_ending_the_thread(redis_client, caplog):
    failures = [RuntimeError("a bug in the listener")]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    listener = Listener(lambda: redis_client, on_message=fail_once)
    try:
        assert listening(redis_client, listener)
        redis_client.publish(listener.channel, "changed")
        assert listening(redis_client, listener, subscriptions=2), "subscribed again, and told so"
        redis_client.publish(listener.channel, "changed again")
        assert wait_for(lambda: listener.messages == 2)
    finally:
        listener.close()
    assert listener.lost == 1
    failed = [r for r in caplog.records if "test subscription failed; restarting it in 0.1s" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info, "a bug is logged with its traceback"


def test_redis_unreachable_is_one_outage_and_the_subscription_resumes_when_it_answers(redis_client, caplog):
    # No retries of its own: each subscription attempt fails at once, so the loop's backoff is what is timed.
    unreachable = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    attempts: list[int] = []

    def client() -> redis.Redis:
        attempts.append(1)
        return unreachable if len(attempts) <= 3 else redis_client

    outage.REDIS.recovered()  # whatever an earlier test left
    caplog.set_level(logging.INFO, logger="mutt.outage")
    listener = Listener(client)
    try:
        assert listening(redis_client, listener), "subscribed once Redis answers (backoff 0.1 + 0.2 + 0.4 s)"
        redis_client.publish(listener.channel, "changed")
        assert wait_for(lambda: listener.messages == 1)
    finally:
        listener.close()
    assert (len(attempts), listener.lost, listener.subscribed) == (4, 3, 1)
    messages = [r.getMessage().split(" (")[0].split(" after ")[0] for r in caplog.records if r.name == "mutt.outage"]
    assert messages == ["Redis unavailable", "Redis available again"], "one line per change of state, not per retry"
