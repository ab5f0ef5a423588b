"""The alerter's step loop: one batch of work per ``Alerter.step()``, serial or pipelined.

Each step: keep the rule snapshot current, take a batch (a held one first, then entries taken over from
a stalled alerter, then new ones), evaluate it (``evaluate``), have it audited (``audit``) and finished
in Redis (``finish``). What this module does itself is the order of that work and what is in hand
between steps: the batch the writer thread is auditing, the audited batch waiting for its Redis work,
the read sent ahead, and a batch held while the database refuses it (kept claimed, retried with
backoff, nothing new read meanwhile).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError

from configcenter.runtime import get_setting
from core import outage, streams
from core.contracts import ALERTER_QUEUE, ALERTERS_GROUP, FORWARDERS_GROUP
from core.redis import get_redis
from rules import metrics
from rules.alerter.audit import Audited, AuditWriter
from rules.alerter.evaluate import Entry, Evaluated, decoder, evaluator
from rules.alerter.finish import Finisher, Settled
from rules.alerter.intake import Intake
from rules.alerter.shedding import LoadShedder
from rules.engine import RuleSet
from rules.listener import LiveRules

logger = logging.getLogger("mutt.alerter")

_MAX_DB_BACKOFF = 30.0


@dataclass
class Batch:
    entries: list[Entry]
    claimed: bool = False  # taken over from another alerter: check delivery counts
    attempts: int = 0
    retry_at: float = 0.0


@dataclass
class Writing:
    """A batch handed to the audit writer thread: ``future`` gives its audited events and refused rows."""

    batch: Batch
    evaluated: Evaluated
    future: Future[Audited]
    started: float


class Alerter:
    def __init__(
        self, consumer: str | None = None, *, client: redis.Redis | None = None, pipelined: bool = False
    ) -> None:
        """``pipelined`` (``run_alerter`` does this): a batch's audit COPY runs in a writer thread while
        the next batch is read and evaluated, and its Redis work (alerts, acknowledgement, flood counts)
        is sent when the batch after that starts, so it runs in Redis while this process evaluates.
        Otherwise each step audits and finishes its batch. ``flush`` or ``stop`` finish what is left."""
        self.consumer = consumer or f"{socket.gethostname()}-{threading.get_native_id()}-{uuid.uuid4().hex[:6]}"
        self.client = client or get_redis()
        self.stream = streams.ingest_stream()
        # Every alert goes to each of these streams (static: a change of MUTT_DESTINATIONS is a restart).
        self.alerts = [streams.destination_stream(name) for name in settings.MUTT_DESTINATIONS]
        self.dlq = streams.dlq_stream(ALERTER_QUEUE)
        self.pipelined = pipelined
        self._stop = threading.Event()
        self.rules = LiveRules(self.client, self._stop)
        self.rules_changed = self.rules.changed
        self.intake = Intake(self.client, stream=self.stream, consumer=self.consumer)
        self.writer = AuditWriter()
        self.finisher = Finisher(
            self.client, consumer=self.consumer, stream=self.stream, alerts=self.alerts, dlq=self.dlq, rules=self.rules
        )
        self.shedder = LoadShedder(
            self.client, alerts=dict(zip(settings.MUTT_DESTINATIONS, self.alerts, strict=True)), writer=self.writer,
            finisher=self.finisher,
        )  # fmt: skip
        self._held: Batch | None = None  # a batch the database refused, kept for retry
        # Pipelined mode: the batch whose audit the writer thread is doing (at most one), and an audited
        # (committed) batch whose Redis work is not sent yet.
        self._writing: Writing | None = None
        self._unfinished: Settled | None = None
        self._listener: threading.Thread | None = None
        streams.ensure_group(self.client, self.stream, ALERTERS_GROUP)
        for alerts in self.alerts:
            streams.ensure_group(self.client, alerts, FORWARDERS_GROUP)

    # --- rules snapshot -----------------------------------------------------------------------

    @property
    def ruleset(self) -> RuleSet:
        return self.rules.ruleset

    @property
    def rules_loaded(self) -> bool:
        return self.rules.loaded

    def start_rule_listener(self) -> None:
        """Listen for rule, host and team changes (published on commit) in a background thread."""
        self._listener = self.rules.start_listener()

    def refresh_rules(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot when told to, or when the periodic safety reload is due."""
        return self.rules.refresh(force=force)

    # --- life cycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batches in hand, stop the listener, and leave the group if nothing is pending for us
        (no dead consumers pile up)."""
        try:
            self.flush()
            if self.intake.read_ahead:  # entries read ahead are ours already: finish them too
                entries = self.intake.take_read()
                if entries:
                    self._run(Batch(entries))
                    self.flush()
        finally:
            self.close()
        streams.forget_consumer_if_done(self.client, self.stream, ALERTERS_GROUP, self.consumer)

    def close(self) -> None:
        """Give the kept Redis connections back to the pool and end the writer thread, without finishing
        anything: what is unacknowledged stays pending for a takeover. ``stop`` finishes first, then
        closes; closing twice is harmless."""
        self.finisher.close()
        self.intake.close()
        self._stop.set()
        self.writer.close()

    def forget_dead_consumers(self) -> list[str]:
        """Now and then, remove from the group the consumers of alerters that are gone: nothing pending, not
        seen for ``consumer_forget_idle_seconds`` (never this one). Returns their names."""
        return self.intake.forget_dead_consumers()

    def flush(self) -> None:
        """Pipelined mode: finish every batch in hand now: wait for the audit in progress, then alert
        and acknowledge what is audited (a batch the database refused is held for retry instead)."""
        while True:
            settled, self._unfinished = self._unfinished, None
            if settled is not None:
                self.finisher.collect(self.finisher.send_finish(settled))
            if self._writing is None:
                return
            self._land()

    @property
    def idle(self) -> bool:
        """Nothing held for retry, no audit in progress, no audited batch in hand, no read ahead."""
        return self._held is None and self._writing is None and self._unfinished is None and not self.intake.read_ahead

    # --- the step -----------------------------------------------------------------------------

    def step(self, block_ms: int | None = None) -> int:
        """Do one batch of work; returns the number of entries finished (0 when idle or backing off).

        If Redis lost the group (restarted empty), it is created again and the next step reads on."""
        try:
            return self._step(block_ms)
        except redis.ResponseError as exc:
            if not streams.is_missing_group(exc):
                raise
            streams.recreate_group(self.client, self.stream, ALERTERS_GROUP, consumer=self.consumer)
            return 0

    def _step(self, block_ms: int | None) -> int:
        self.refresh_rules(force=not self.rules.loaded)
        self.forget_dead_consumers()
        if not self.rules.loaded:
            # Matching against an empty snapshot would audit real pages as unhandled: wait for the rules.
            time.sleep(1)
            return 0
        if self._held is not None:
            return self._retry_held()
        if self._shedding():
            return self._finish_in_hand()
        claimed = self.intake.claim_abandoned()
        if claimed:
            return self._run(Batch(claimed, claimed=True))
        # With a batch in hand, look without waiting: if nothing is there, finish it before blocking.
        entries = self.intake.read_new(block_ms if self.idle else 0)
        if not entries:
            self.flush()
            return 0
        if self.pipelined:
            try:
                # Read ahead, without waiting: the reply waits on its connection for the next step.
                self.intake.send_read(0)
            except redis.RedisError as exc:
                logger.warning("could not read the next batch ahead (%s); reading it when its turn comes", exc)
        return self._run(Batch(entries))

    def _shedding(self) -> bool:
        """True when this step must not consume: the alert backlog is above the shed threshold. In mode
        ``dlq`` the entries read now are shed; if the database refuses their audit, they are held as any
        batch is (without that each step would read, and claim, one more batch)."""
        shedding = self.shedder.check()
        if shedding is None:
            return False
        mode, why = shedding
        if mode != "defer":
            entries = self.intake.read_new(block_ms=0)
            try:
                self.shedder.shed(entries, why)
            except DatabaseError as exc:
                self._hold(Batch(entries), exc)
        return True

    def _finish_in_hand(self) -> int:
        """While consumption pauses: run the entries read ahead before the backlog grew (they are this
        alerter's already; left unread they would sit unclaimed), else finish the batches in hand."""
        entries = self.intake.take_read() if self.intake.read_ahead else []
        if entries:
            return self._run(Batch(entries))
        self.flush()
        return 0

    def _run(self, batch: Batch) -> int:
        """Evaluate the batch, audit it, then alert and acknowledge it; in pipelined mode the audit is
        handed to the writer thread and the rest happens in later steps (see ``_run_pipelined``).

        A database outage keeps the batch for a retry (nothing of it is acknowledged). A row the
        database refuses (bad data) goes to the DLQ alone; its neighbours are audited.
        """
        return self._run_pipelined(batch) if self.pipelined else self._run_serial(batch)

    def _rows(self, batch: Batch) -> Evaluated:
        rule_bytes = get_setting("rule_max_message_bytes")  # once per batch, not per event
        counts = self.intake.delivery_counts(batch.entries) if batch.claimed else {}
        decode = decoder(counts, get_setting("alerter_max_deliveries"))
        return Evaluated(decode, evaluator(self.rules.ruleset, rule_bytes), batch.entries)

    def _run_serial(self, batch: Batch) -> int:
        started = time.perf_counter()
        evaluated = self._rows(batch)
        try:
            audited, refused = self.writer.audit(evaluated)
        except DatabaseError as exc:  # unreachable, or refusing for a reason of its own state
            return self._hold(batch, exc)
        outage.POSTGRESQL.recovered()
        finisher = self.finisher
        finisher.collect(finisher.send_finish(finisher.settle(batch.entries, evaluated, audited, refused, started)))
        return len(batch.entries)

    def _run_pipelined(self, batch: Batch) -> int:
        """One turn of the pipeline. While this process evaluates this batch, the writer thread audits
        the previous one and Redis runs the finishing scripts of the one before it (sent first, so the
        read that started this step did not wait behind them). Then: read those scripts' replies, take
        the previous batch's audit result (it becomes the batch to finish next turn), and hand this
        batch to the writer.

        If evaluating fails (a Redis error while checking a takeover's delivery counts), everything
        before this batch is still finished, then the error is raised; this batch stays pending.
        """
        started = time.perf_counter()
        unfinished, self._unfinished = self._unfinished, None
        finishing = self.finisher.send_finish(unfinished) if unfinished is not None else None
        try:
            evaluated = self._rows(batch)
        except BaseException:
            if finishing is not None:
                self.finisher.collect(finishing)
            self.flush()
            raise
        if finishing is not None:
            self.finisher.collect(finishing)
        if self._writing is not None:
            self._land()
        if self._held is not None:
            # The previous batch found the database down: keep this one with it, unaudited.
            self._held.entries.extend(batch.entries)
            self._held.claimed = self._held.claimed or batch.claimed
            return 0
        self._writing = Writing(batch, evaluated, self.writer.submit(evaluated), started)
        return len(batch.entries)

    def _land(self) -> None:
        """Wait for the writer's audit: the batch becomes the one to finish next (or is held if the
        database was down). A bug in the writer is raised here; the batch stays pending."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        if self._unfinished is not None:  # callers finish it first; never expected
            raise RuntimeError("an audited batch would be overwritten before it is finished")
        try:
            audited, refused = writing.future.result()
        except DatabaseError as exc:  # unreachable, or refusing for a reason of its own state
            self._hold(writing.batch, exc)
            return
        outage.POSTGRESQL.recovered()
        batch = writing.batch
        self._unfinished = self.finisher.settle(batch.entries, writing.evaluated, audited, refused, writing.started)

    # --- a batch the database refused -----------------------------------------------------------

    def _hold(self, batch: Batch, exc: Exception) -> int:
        if self.intake.read_ahead:
            # Entries read ahead are this alerter's now: keep them with the batch (and refresh their
            # claim with it) rather than let them sit unseen until another alerter takes them over.
            try:
                batch.entries.extend(self.intake.take_read())
            except redis.RedisError:
                logger.warning("could not take the entries read ahead; they are taken over later", exc_info=True)
        held = self._held
        if held is not None and held is not batch:
            # Another batch is held already (shed entries held while the writer's audit failed too): keep
            # both, so none of their entries stops being kept claimed.
            known = {entry_id for entry_id, _ in batch.entries}
            batch.entries.extend(entry for entry in held.entries if entry[0] not in known)
            batch.attempts = max(batch.attempts, held.attempts)
            batch.claimed = batch.claimed or held.claimed
        batch.attempts += 1
        delay = min(_MAX_DB_BACKOFF, 0.5 * 2 ** (batch.attempts - 1))
        batch.retry_at = time.monotonic() + delay
        self._held = batch
        metrics.DB_ERRORS.inc()
        # Unreachable, or refusing writes for a reason of its own state: one line when it starts, one a
        # minute while it lasts (the retries back off to 30 s), one when an audit succeeds again.
        outage.POSTGRESQL.failed(exc, doing=f"the alerter keeps {len(batch.entries)} entries unacknowledged")
        logger.debug("audit held: %d entries, retry in %.1fs (%s)", len(batch.entries), delay, exc)
        return 0

    def _retry_held(self) -> int:
        batch = self._held
        if batch is None:
            return 0
        if time.monotonic() < batch.retry_at:
            self.intake.keep_claimed(batch.entries)
            time.sleep(min(0.2, max(0.0, batch.retry_at - time.monotonic())))
            return 0
        self._held = None
        # Audited here and now, whatever the mode: while the database stays down, nothing new is read
        # and the held batch does not grow.
        return self._run_serial(batch)
