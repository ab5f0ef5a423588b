"""Load shedding: when the alert backlog (the forwarders' unfinished work) grows too far, stop consuming.

The backlog is the longest of the destinations' streams: one destination's forwarders falling behind holds
every alert back, since each alert goes to all of them. With one destination a check costs one XLEN; with
more, one XLEN each in one round trip.

Above ``alerter_queue_warn_threshold`` each check warns; above ``alerter_queue_shed_threshold`` the step
does not consume. In mode ``defer`` (the default) it pauses and the entries stay queued; in mode ``dlq``
the entries it reads are moved to the alerter DLQ unmatched, audited as dead-lettered like entries past
the delivery limit, so a replay updates their rows to the real outcome.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.db import DatabaseError, connection

from configcenter.runtime import get_setting
from core import streams
from core.contracts import SHED
from rules import metrics
from rules.alerter.audit import AuditWriter
from rules.alerter.evaluate import Decoded, Entry, Poison, dead_letter_row, decoder
from rules.alerter.finish import Finisher

logger = logging.getLogger("mutt.alerter")

BACKLOG_CLEAR_SECONDS = 0.1


class LoadShedder:
    def __init__(self, client: redis.Redis, *, alerts: dict[str, str], writer: AuditWriter, finisher: Finisher) -> None:
        """``alerts``: each destination's name and stream."""
        self.client = client
        self.alerts = list(alerts.values())
        self._gauges = [metrics.DESTINATION_BACKLOG.labels(name) for name in alerts]  # bound once
        self._writer = writer
        self._finisher = finisher
        self._backlog_clear_until = 0.0

    def check(self) -> tuple[str, str] | None:
        """None when the step may consume; else the shed mode and why (the step must not consume). Mode
        ``defer`` has paused a moment already; in mode ``dlq`` the step sheds what it reads (``shed``).

        A backlog under the warning threshold is trusted for ``BACKLOG_CLEAR_SECONDS``: at full speed
        that spares a round trip on most batches, and a backlog cannot grow far in that time.
        """
        now = time.monotonic()
        if now < self._backlog_clear_until:
            return None
        backlog = self._backlog()
        metrics.ALERT_BACKLOG.set(backlog)
        if backlog <= get_setting("alerter_queue_warn_threshold"):
            self._backlog_clear_until = now + BACKLOG_CLEAR_SECONDS
            return None
        shed_at = get_setting("alerter_queue_shed_threshold")
        if backlog <= shed_at:
            metrics.QUEUE_WARNINGS.inc()
            logger.warning("alert backlog %d above the warning threshold", backlog)
            return None
        mode: str = get_setting("alerter_shed_mode")
        metrics.SHED_STEPS.labels(mode).inc()
        if mode == "defer":
            logger.warning("alert backlog %d above the shed threshold; pausing consumption", backlog)
            time.sleep(0.5)
        return mode, f"alert backlog {backlog} > {shed_at}"

    def _backlog(self) -> int:
        """The longest destination stream's length; each stream's is reported by destination."""
        lengths = streams.backlogs(self.client, self.alerts)
        for gauge, length in zip(self._gauges, lengths, strict=True):
            gauge.set(length)
        return max(lengths)

    def shed(self, entries: list[Entry], why: str) -> None:
        """Mode ``dlq``: move ``entries`` to the DLQ unmatched. They are dead-lettered as surely as entries past
        the delivery limit, so they are audited the same way (handling dead_lettered, reason ``shed: ...``) and
        a replay updates the row to the real outcome. (Mode ``defer`` moves nothing: its entries stay queued.)
        An entry that is no event goes as malformed. If the database is down, nothing is moved: the
        DatabaseError is raised, for the step to hold the entries as a batch the database refused (backoff,
        claim kept, nothing new read meanwhile) and process them when it is back."""
        if not entries:
            return
        decode = decoder({}, get_setting("alerter_max_deliveries"))
        dead: list[tuple[Decoded, tuple[Any, ...]]] = []
        poison: list[Poison] = []
        for entry_id, fields in entries:
            item = decode(entry_id, fields)
            if isinstance(item, tuple):
                poison.append(item)
                continue
            item.dead_letter = (SHED, why)
            dead.append((item, dead_letter_row(item)))
        try:
            poison += self._writer.write_dead(dead) if dead else []
        except DatabaseError:
            connection.close()  # as the writer's audit does: the next attempt opens a new connection
            raise
        self._finisher.dead_letter(poison)
        self._finisher.publish_and_ack([], [entry_id for entry_id, _ in entries])
        metrics.EVENTS.labels("shed").inc(len(entries))
