"""A Redis pub/sub subscription kept alive by a background thread: the one loop every listener runs.

A process learns of changes made elsewhere (a rule edited, a setting changed) from an announcement on a
channel. Pub/sub delivers only to subscribers connected at the time, so whatever a listener does on an
announcement it also does after every (re)subscription (``on_subscribed``): some may have been missed
meanwhile. The loop reconnects with backoff (0.1 s, doubling to 5 s), reports a Redis outage once per
change of state (:mod:`core.outage`), restarts after an error of its own callbacks, and waits for
messages ``poll_seconds`` at a time so that a stop is noticed within that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import redis

from core import outage

MIN_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


def listen(
    channel: str,
    *,
    client: Callable[[], redis.Redis],
    stop: threading.Event,
    on_message: Callable[[], None],
    on_subscribed: Callable[[], None],
    name: str,
    log: logging.Logger,
    poll_seconds: float = 0.25,
    on_poll: Callable[[], None] | None = None,
    on_lost: Callable[[], None] | None = None,
    doing: str = "",
) -> None:
    """Run until ``stop`` is set: subscribe to ``channel`` on ``client()`` (asked again at each reconnection),
    call ``on_subscribed`` once subscribed and ``on_message`` for each announcement, ``on_poll`` after
    each wait for one, and ``on_lost`` when the subscription fails. ``name`` (e.g. "settings subscription")
    and ``doing`` (what is held while Redis is down) go into the log lines."""
    backoff = MIN_BACKOFF_SECONDS
    while not stop.is_set():
        pubsub = None
        try:
            pubsub = client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel)
            on_subscribed()
            outage.REDIS.recovered()
            backoff = MIN_BACKOFF_SECONDS
            while not stop.is_set():
                if pubsub.get_message(timeout=poll_seconds) is not None:
                    on_message()
                if on_poll is not None:
                    on_poll()
        except Exception as exc:
            if on_lost is not None:
                on_lost()
            if isinstance(exc, redis.RedisError):
                outage.warn_or_report(exc, log, f"{name} lost (%s); reconnecting in %.1fs", backoff, doing=doing)
            else:
                log.exception("%s failed; restarting it in %.1fs", name, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            if pubsub is not None:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()
