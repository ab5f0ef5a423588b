"""The alerter's rule snapshot, kept current: rebuilt when rules, development hosts or device teams change.

Changes are announced on the rules channel when they commit (``rules.services``). A background thread
listens (:mod:`core.subscription`) and only marks the snapshot stale; the alerter's step rebuilds it
(``rules.snapshot``) in its own thread, between batches, so every batch is matched against one snapshot.
A periodic reload (``cache_reload_interval``) is the safety net for an announcement nobody heard.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.db import connection

from configcenter.runtime import get_setting
from core import outage, subscription
from rules import metrics
from rules.engine import RuleSet
from rules.services import rules_channel
from rules.snapshot import build_ruleset

logger = logging.getLogger("mutt.alerter")


class LiveRules:
    def __init__(self, client: redis.Redis, stop: threading.Event) -> None:
        """``stop`` ends the listener thread (the alerter sets it when it closes)."""
        self.client = client
        self.ruleset: RuleSet = RuleSet.empty()
        self.loaded = False  # nothing is matched before the first snapshot loads
        self.loaded_at = 0.0
        self.changed = threading.Event()
        self._stop = stop

    def start_listener(self) -> threading.Thread:
        """Listen for rule, host and team changes (published on commit) in a background thread."""
        thread = threading.Thread(target=self._listen, name="alerter-rules", daemon=True)
        thread.start()
        return thread

    def _listen(self) -> None:
        subscription.listen(
            rules_channel(), client=lambda: self.client, stop=self._stop,
            on_message=self.changed.set, on_subscribed=self.changed.set,
            name="rule change subscription", log=logger, poll_seconds=0.5,
        )  # fmt: skip

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot when told to, or when the periodic safety reload is due."""
        due = time.monotonic() - self.loaded_at >= get_setting("cache_reload_interval")
        if not (force or due or self.changed.is_set()):
            return False
        self.changed.clear()
        started = time.perf_counter()
        try:
            ruleset = build_ruleset()
        except Exception as exc:
            metrics.RELOAD_FAILURES.inc()
            reporter = outage.reporter_for(exc)
            if reporter is None:
                logger.exception(
                    "rule snapshot reload failed; keeping the previous snapshot (%s)", self.ruleset.version
                )
            else:  # one line per outage, not one per retry (every second while no snapshot is loaded)
                held = "no event is matched until the rules load" if not self.loaded else "rules kept as loaded"
                reporter.failed(exc, doing=f"{held} (snapshot {self.ruleset.version})")
            self.loaded_at = time.monotonic()  # retry at the next periodic reload, or on the next change
            return False
        finally:
            connection.close_if_unusable_or_obsolete()
        outage.POSTGRESQL.recovered()
        self.ruleset = ruleset
        self.loaded = True
        self.loaded_at = time.monotonic()
        metrics.RULES_LOADED.set(ruleset.rule_count)
        metrics.RELOAD_SECONDS.observe(time.perf_counter() - started)
        logger.info("rule snapshot loaded", extra={"rules": ruleset.rule_count, "version": ruleset.version})
        return True
