"""The alerter: ingest stream → compiled rules → audit rows → alert stream, one batch at a time.

``Alerter.step()`` does one unit of work and returns how many entries it finished; the
``run_alerter`` command loops over it. Per batch:

1. read up to ``alerter_batch_size`` entries (first any reclaimed from a crashed alerter, then new);
2. decode each entry and match it against the compiled rule snapshot (plain Python, no ORM per event),
   making its audit row in COPY's text format and its alert payload; an entry that cannot be decoded,
   or was delivered too often, goes to the alerter DLQ;
3. write the audit rows in one transaction with one COPY. A redelivered event makes the COPY fail on
   the unique (event_id, event_time); the batch then goes in with INSERT ... ON CONFLICT DO NOTHING, so
   it changes nothing. A row the database refuses goes to the DLQ;
4. after commit, one Lua call adds the alerts (skipping event ids already alerted) and acknowledges
   the batch, so neither a crash nor a takeover can duplicate an alert;
5. count unmatched events per host and template for the flood detector (one Lua call).

``run_alerter`` pipelines this, so the two cores of a small machine and Redis work at once: while this
process evaluates batch N (step 2), a writer thread audits batch N-1 (step 3, on its own database
connection; psycopg2 lets go of the GIL while PostgreSQL works), Redis runs steps 4-5 for batch N-2 and
answers the read of batch N+1, sent ahead. A batch is acknowledged only after its audit committed, and
everything in hand is finished at once when no batch follows, and on ``stop()``. A Redis error in steps
4-5 is logged and counted: the entries stay pending and are redone after the claim timeout. That adds
no audit row and no alert, though the flood counter may count the redone batch's unmatched events twice.

If the database is down nothing is acknowledged: the batch is kept and retried with backoff, and its
entries' idle time is refreshed so other alerters do not take them over while this one lives. The same
holds when the database refuses the batch for a reason of its own state rather than the data's (a
server left read-only by a failover, a full disk, a revoked privilege): only a data error (SQLSTATE
class 22, 23 or 54, see ``blames_the_data``) sends a row to the DLQ.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    connections,
    transaction,
)
from psycopg2.extras import execute_values

from configcenter.runtime import get_setting
from core import exactjson, outage, streams
from core.redis import DeferredCommand, DeferredScript, get_redis, key
from rules import flood, metrics
from rules.alerts import rule_alert
from rules.engine import SEVERITY_FROM_SYSLOG, RuleSet, clip_message
from rules.partitions import ensure_partitions
from rules.services import rules_channel
from rules.snapshot import build_ruleset

logger = logging.getLogger("mutt.alerter")

ALERTING = frozenset({"page_and_ticket", "page_only", "ticket_only"})
_MAX_DB_BACKOFF = 30.0

_INSERT_SQL = """
INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, rule_id, handling,
    team, forwarded, alert_severity, syslog_severity, message, trap_oid, source_type, correlation_id, raw)
VALUES %s
ON CONFLICT (event_id, event_time) DO NOTHING
"""
_INSERT_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json)"
# The fast path: COPY the batch straight into the partitioned table (PostgreSQL routes each row). A
# redelivered event makes it fail on the unique (event_id, event_time); then the batch goes through
# the INSERT ... ON CONFLICT DO NOTHING above, so redelivery stays idempotent at no cost to the
# common case.
_COPY_COLUMNS = (
    "event_id", "event_time", "received_at", "hostname", "environment", "rule_id", "handling", "team", "forwarded",
    "alert_severity", "syslog_severity", "message", "trap_oid", "source_type", "correlation_id", "raw",
)  # fmt: skip
_COPY_SQL = f"COPY rules_eventauditlog ({', '.join(_COPY_COLUMNS)}) FROM STDIN"
# An event dead-lettered before it was matched (delivered too often) is audited as such, with the reason. A
# row the event already has (audited by an alerter that died before acknowledging it) is left as it is.
DEAD_LETTERED = "dead_lettered"
_INSERT_DEAD_SQL = (
    f"INSERT INTO rules_eventauditlog ({', '.join(_COPY_COLUMNS)}, dead_letter_reason) VALUES %s "  # noqa: S608
    "ON CONFLICT (event_id, event_time) DO NOTHING"
)
_INSERT_DEAD_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s)"
# When such an event comes back (replayed from the DLQ), its row takes the real outcome: updated, not added
# (the INSERT ... ON CONFLICT DO NOTHING of a redelivered batch leaves it alone). The reason stays, as the
# record that the event was dead-lettered once. UPDATE ... FROM tolerates an event twice in the batch.
_COLUMN_TYPES = {
    "event_id": "uuid", "event_time": "timestamptz", "received_at": "timestamptz", "rule_id": "bigint",
    "forwarded": "boolean", "syslog_severity": "smallint", "raw": "json",
}  # fmt: skip
_REVIVE_SET = ", ".join(
    f"{c} = v.{c}" + (f"::{_COLUMN_TYPES[c]}" if c in _COLUMN_TYPES else "") for c in _COPY_COLUMNS[2:]
)
_REVIVE_SQL = (
    f"UPDATE rules_eventauditlog AS a SET {_REVIVE_SET} FROM (VALUES %s) AS v ({', '.join(_COPY_COLUMNS)}) "  # noqa: S608
    f"WHERE a.handling = '{DEAD_LETTERED}' AND a.event_id = v.event_id::uuid "
    "AND a.event_time = v.event_time::timestamptz"
)
_COPY_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]").search
_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

# Add each alert unless its event id was alerted before (a redelivery or a takeover), then
# acknowledge and delete the batch's entries: one atomic step. KEYS: alerts stream, ingest stream,
# dedup hash. ARGV: alerters group, dedup ttl, n alerts, forwarders group, n (event id, payload) pairs,
# then the entry ids to acknowledge (in chunks: Lua's unpack stops near 8,000 values).
_PUBLISH_AND_ACK = """
local n = tonumber(ARGV[3])
if n > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  -- Redis lost the alert stream: recreate it with the forwarders' group so nothing added is skipped
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[4], '0', 'MKSTREAM')
end
local added = 0
for i = 0, n - 1 do
  -- mark the event id only once its alert is added: a script that fails halfway (an XADD refused)
  -- leaves no mark behind that would skip the alert when the batch is redone
  if redis.call('HEXISTS', KEYS[3], ARGV[5 + i * 2]) == 0 then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[6 + i * 2])
    redis.call('HSET', KEYS[3], ARGV[5 + i * 2], '1')
    added = added + 1
  end
end
if n > 0 then redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2])) end
for i = 5 + n * 2, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[2], unpack(ARGV, i, last))
end
return added
"""
PARTITION_CHECK_SECONDS = 6 * 3600
CONSUMER_SWEEP_SECONDS = 60.0  # how often an alerter removes the consumers killed alerters left in the group
TRIM_INTERVAL_SECONDS = 1.0
BACKLOG_CLEAR_SECONDS = 0.1
# The pipelined alerter's audit writer thread needs the GIL back after each database call. At Python's
# default switch interval (5 ms) it waits that long behind the evaluating thread several times per
# batch, longer than the evaluation itself; at 0.2 ms the audit keeps pace (measured: the evaluating
# thread then waited 2% of a run for the writer, against 45% at 5 ms). run_alerter sets it.
WRITER_SWITCH_INTERVAL = 0.0002
WRITER_CONNECTION_CHECK_SECONDS = 1.0
# Redelivery after a crash or takeover happens within the claim timeout; hours of margin are plenty.
DEDUP_TTL_SECONDS = 6 * 3600
# SQLSTATE classes that blame a row: 22 data exception (a value the column cannot take), 23 integrity
# constraint violation (NOT NULL, CHECK, no partition for the row's time), 54 program limit exceeded
# (a value too large for an index). Any other refusal comes from the database's state: 25006 a
# server left read-only by a failover, 53100 a full disk, 42501 a revoked privilege, 57P01 an
# administrator's shutdown. Sending rows to the DLQ for those would empty the stream into it for as
# long as the state lasts; the batch is held like an outage instead. The INSERTs send every value as
# the text the COPY sends (``_insert_values``), so a value of the wrong JSON type fails as class 22 in
# both rather than as a type mismatch (42804) of the INSERT alone.
_DATA_ERROR_CLASSES = ("22", "23", "54")


def copy_text(rows: list[tuple[Any, ...]], line: Callable[[tuple[Any, ...]], str] | None = None) -> bytes:
    """Rows in COPY's text format: tab-separated, ``\\N`` for NULL, backslash escapes in text.

    ``line`` formats one row (default ``copy_line``, for rows of any shape).
    """
    lines = list(map(line or copy_line, rows))
    lines.append("")
    return "\n".join(lines).encode()


def copy_line(row: tuple[Any, ...]) -> str:
    """One row in COPY's text format. Most rows need no escaping at all, which one scan of the joined
    row tells; only the others are escaped field by field."""
    try:
        line = "\t".join(
            [
                value if value.__class__ is str
                else "\\N" if value is None
                else "t" if value is True
                else "f" if value is False
                else str(value) if value.__class__ is int
                else _copy_value(value)
                for value in row
            ]
        )  # fmt: skip
    except TypeError:
        return _copy_escaped_line(row)
    return line if _is_clean(line, row.count(None), len(row)) else _copy_escaped_line(row)


def audit_copy_line(row: tuple[Any, ...]) -> str:
    """``copy_line`` for an audit row (``_COPY_COLUMNS``, as ``Alerter._evaluate`` makes it), formatted in
    one step: the alerter's hot path. Only rule_id and syslog_severity may be NULL.

    Every value but the team and the alert severity comes from the event's JSON (``raw``), whose
    strings cannot hold a tab, a line break or a backslash unless the JSON text has a backslash (JSON
    escapes them, and orjson refuses them raw). So one look for a backslash in ``raw`` tells whether
    any escaping is needed; a row that needs it takes ``copy_line``'s general way.
    """
    (
        event_id, event_time, received_at, hostname, environment, rule_id, handling, team, forwarded,
        alert_severity, syslog_severity, message, trap_oid, source_type, correlation_id, raw,
    ) = row  # fmt: skip
    if "\\" in raw or _COPY_NEEDS_ESCAPE(team) or _COPY_NEEDS_ESCAPE(alert_severity):
        return copy_line(row)
    return (
        f"{event_id}\t{event_time}\t{received_at}\t{hostname}\t{environment}\t"
        f"{_NULL if rule_id is None else rule_id}\t{handling}\t{team}\t{'t' if forwarded else 'f'}\t"
        f"{alert_severity}\t{_NULL if syslog_severity is None else syslog_severity}\t{message}\t{trap_oid}\t"
        f"{source_type}\t{correlation_id}\t{raw}"
    )


def _is_clean(line: str, nulls: int, columns: int) -> bool:
    """No escaping needed: the only backslashes are the NULL markers, the only tabs the separators."""
    return line.count("\\") == nulls and line.count("\t") == columns - 1 and "\n" not in line and "\r" not in line


def _insert_values(row: tuple[Any, ...]) -> tuple[str | None, ...]:
    """An audit row's values for ``_INSERT_SQL``, as COPY would read them: text (or NULL), which the
    database converts to each column's type."""
    return tuple(
        value if value is None or value.__class__ is str
        else "t" if value is True
        else "f" if value is False
        else str(value)
        for value in row
    )  # fmt: skip


def _copy_escaped_line(row: tuple[Any, ...]) -> str:
    return "\t".join(_copy_escaped(value) for value in row)


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(type(value).__name__)


def _copy_escaped(value: Any) -> str:
    if value is None or value is True or value is False:
        return _copy_value(value)
    text = value if isinstance(value, str) else str(value)
    return text.translate(_COPY_ESCAPES) if _COPY_NEEDS_ESCAPE(text) else text


def _stream_position(entry_id: bytes) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split(b"-"))


def _field_dict(pairs: list[bytes]) -> dict[bytes, bytes]:
    if len(pairs) == 2:  # the one field ingest writes
        return {pairs[0]: pairs[1]}
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def blames_the_data(exc: BaseException) -> bool:
    """Whether the database (or psycopg2, e.g. on a NUL character) refused ``exc``'s statement because of
    the values in it, not because of the database's state (see ``_DATA_ERROR_CLASSES``)."""
    if isinstance(exc, ValueError):
        return True
    code = getattr(exc.__cause__, "pgcode", None) or getattr(exc, "pgcode", None)
    # No SQLSTATE: psycopg2 refused to send the values (an adaptation error), so the data again.
    return code is None or code[:2] in _DATA_ERROR_CLASSES


def _warn_or_report(exc: redis.RedisError, message: str) -> None:
    """A Redis error in housekeeping: Redis unreachable is an outage (one line per state change, see
    :mod:`core.outage`); anything else is logged here (``message`` has one ``%s``: the error)."""
    reporter = outage.reporter_for(exc)
    if reporter is None:
        logger.warning(message, exc)
    else:
        reporter.failed(exc)


def dedup_key(received_at: str) -> str:
    """Alert dedup hash of one hour of receive time: a redelivered event falls in the same bucket."""
    return key("alerted", received_at[:13])


@dataclass
class Outcome:
    """What one batch did (for the metrics)."""

    entries: int = 0
    audited: int = 0
    alerts: int = 0
    unmatched: int = 0
    dead_lettered: int = 0
    floods: int = 0


@dataclass(slots=True)
class _Decoded:
    entry_id: bytes
    event: dict[str, Any]
    raw: bytes  # the entry's JSON as ingest wrote it: stored as the audit row's raw event, not re-encoded
    dead_letter: tuple[str, str] | None = None  # (reason, error): audit as dead-lettered, do not evaluate


@dataclass
class _Settled:
    """A batch whose audit rows are committed; what is left is Redis work (see ``Alerter._send_finish``)."""

    outcome: Outcome
    alerts: list[tuple[str, str, bytes]]  # (dedup bucket, event id, alert payload)
    ack_ids: list[bytes]
    poison: list[tuple[bytes, bytes, str, str]]
    unmatched: list[tuple[str, str, str]]  # (hostname, template, message) of events no rule explains
    started: float  # when the batch's work began (perf_counter)


@dataclass
class _Finishing:
    """A settled batch whose finishing scripts are sent; ``Alerter._collect`` reads their replies."""

    settled: _Settled
    alerts: int = 0  # added by calls already answered
    counting: flood.Counting | None = None
    failed: Exception | None = None


@dataclass
class _Writing:
    """A batch handed to the audit writer thread: ``future`` gives its audited events and refused rows."""

    batch: _Batch
    evaluated: _Evaluated
    future: Future[tuple[list[Any], list[tuple[bytes, bytes, str, str]]]]
    started: float


@dataclass
class _Batch:
    entries: list[tuple[bytes, dict[bytes, bytes]]]
    claimed: bool = False  # taken over from another alerter: check delivery counts
    attempts: int = 0
    retry_at: float = 0.0
    outcome: Outcome = field(default_factory=Outcome)


def dead_letter_row(item: _Decoded) -> tuple[Any, ...]:
    """The audit row of an event dead-lettered before evaluation: its own fields, no rule, handling
    ``dead_lettered``, and the reason (``_INSERT_DEAD_SQL``'s columns). The event is not matched: it may be
    the very event that made alerters fail."""
    event = item.event
    get = event.get
    reason, error = item.dead_letter or ("", "")
    return (
        event["event_id"], event["timestamp"], event["received_at"], event["hostname"], "", None, DEAD_LETTERED,
        "", False, "", get("syslog_severity"), get("message") or "", get("trap_oid") or "",
        (get("source_type") or "")[:50], (get("correlation_id") or "")[:128], item.raw.decode(),
        f"{reason}: {error}"[:200],
    )  # fmt: skip


class _Evaluated:
    """A batch decoded and evaluated: each event with its audit row, alert payload and flood template,
    the entries that are poison, and the audit rows in COPY's text format, ready to send.

    Evaluation runs in the alerter's thread; the COPY may run in the audit writer's thread (pipelined
    mode), so nothing here touches the database.
    """

    def __init__(self, decode: Any, evaluate: Any, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        # (event, audit row, alert payload or None, flood template of an unhandled event or None)
        self.evaluated: list[tuple[_Decoded, tuple[Any, ...], bytes | None, str | None]] = []
        self.poison: list[tuple[bytes, bytes, str, str]] = []
        # Events dead-lettered before evaluation (delivered too often), with their audit rows.
        self.dead: list[tuple[_Decoded, tuple[Any, ...]]] = []
        rows: list[tuple[Any, ...]] = []
        for entry_id, fields in entries:
            try:
                item = decode(entry_id, fields)
            except Exception as exc:
                raw = fields.get(streams.PAYLOAD_FIELD) or repr(fields).encode()
                self.poison.append((entry_id, raw, "malformed", f"{type(exc).__name__}: {exc}"))
                continue
            if item.__class__ is tuple:
                self.poison.append(item)
                continue
            if item.dead_letter is not None:
                self.dead.append((item, dead_letter_row(item)))
                continue
            try:
                row, alert, template = evaluate(item)
            except Exception as exc:
                self.poison.append((item.entry_id, item.raw, "processing_error", f"{type(exc).__name__}: {exc}"))
                continue
            self.evaluated.append((item, row, alert, template))
            rows.append(row)
        self.copy = copy_text(rows, audit_copy_line) if rows else b""


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
        self.alerts = streams.alerts_stream()
        self.dlq = streams.dlq_stream("alerter")
        self.ruleset: RuleSet = RuleSet.empty()
        self.loaded_at = 0.0
        self.rules_changed = threading.Event()
        self.rules_loaded = False  # nothing is matched before the first snapshot loads
        self._rule_bytes = 8_192  # rule_max_message_bytes, read per batch in _rows
        self._publish = self.client.register_script(_PUBLISH_AND_ACK)
        self._held: _Batch | None = None  # a batch the database refused, kept for retry
        self.pipelined = pipelined
        # Pipelined mode: the batch whose audit the writer thread is doing (at most one), and an audited
        # (committed) batch whose Redis work is not sent yet.
        self._writer: ThreadPoolExecutor | None = None
        self._writer_checked_at = 0.0  # read and written by the writer thread only
        self._writing: _Writing | None = None
        self._unfinished: _Settled | None = None
        # The two scripts that finish a batch, each on a connection of its own so their replies can be
        # read after other work (the main client's pool is used meanwhile).
        self._publish_later = DeferredScript(self.client, _PUBLISH_AND_ACK)
        self._count_later = DeferredScript(self.client, flood.RECORD_SCRIPT)
        # Reads of new entries, on a connection of their own. Pipelined mode sends the next read as soon
        # as a batch is taken, so Redis answers it while this one is evaluated.
        self._reader = DeferredCommand(self.client)
        self._last_claim = 0.0
        self._backlog_clear_until = 0.0
        self._trimmed_at = 0.0
        self._partitions_checked = time.monotonic()
        self._swept_at = -CONSUMER_SWEEP_SECONDS  # the first step sweeps
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        streams.ensure_group(self.client, self.stream, streams.ALERTERS_GROUP)
        streams.ensure_group(self.client, self.alerts, streams.FORWARDERS_GROUP)

    # --- rules snapshot -----------------------------------------------------------------------

    def start_rule_listener(self) -> None:
        """Listen for rule, host and team changes (published on commit) in a background thread."""
        self._listener = threading.Thread(target=self._listen, name="alerter-rules", daemon=True)
        self._listener.start()

    def stop(self) -> None:
        """Finish the batches in hand, stop the listener, and leave the group if nothing is pending for us
        (no dead consumers pile up)."""
        try:
            self.flush()
            if self._reader.in_flight:  # entries read ahead are ours already: finish them too
                entries = self._take_read()
                if entries:
                    self._run(_Batch(entries))
                    self.flush()
        finally:
            self.close()
        streams.forget_consumer_if_done(self.client, self.stream, streams.ALERTERS_GROUP, self.consumer)

    def close(self) -> None:
        """Give the kept Redis connections back to the pool and end the writer thread, without finishing
        anything: what is unacknowledged stays pending for a takeover. ``stop`` finishes first, then
        closes; closing twice is harmless."""
        self._publish_later.close()
        self._count_later.close()
        self._reader.close()
        self._stop.set()
        self._stop_writer()

    def maintain_partitions(self) -> None:
        """Create coming months' partitions now and then (not only at start), so long-running alerters
        never send a new month to the default partition."""
        if time.monotonic() - self._partitions_checked < PARTITION_CHECK_SECONDS:
            return
        self._partitions_checked = time.monotonic()
        try:
            ensure_partitions()
        except Exception:
            logger.warning("could not check the audit log partitions", exc_info=True)

    def forget_dead_consumers(self) -> list[str]:
        """Now and then, remove from the group the consumers of alerters that are gone: nothing pending, not
        seen for ``consumer_forget_idle_seconds`` (never this one). Returns their names."""
        now = time.monotonic()
        if now - self._swept_at < CONSUMER_SWEEP_SECONDS:
            return []
        self._swept_at = now
        try:
            removed = streams.forget_idle_consumers(
                self.client, self.stream, streams.ALERTERS_GROUP,
                idle_seconds=get_setting("consumer_forget_idle_seconds"), keep=[self.consumer],
            )  # fmt: skip
        except redis.RedisError as exc:
            _warn_or_report(exc, "could not look for consumers of stopped alerters (%s); next sweep retries")
            return []
        if removed:
            logger.info("removed %d idle consumers of stopped alerters", len(removed), extra={"consumers": removed})
        return removed

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(rules_channel())
                self.rules_changed.set()  # changes may have been missed while not subscribed
                outage.REDIS.recovered()
                backoff = 0.1
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self.rules_changed.set()
            except redis.RedisError as exc:
                _warn_or_report(exc, "rule change subscription lost (%s); retrying")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                pubsub.close()

    def refresh_rules(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot when told to, or when the periodic safety reload is due."""
        due = time.monotonic() - self.loaded_at >= get_setting("cache_reload_interval")
        if not (force or due or self.rules_changed.is_set()):
            return False
        self.rules_changed.clear()
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
                held = "no event is matched until the rules load" if not self.rules_loaded else "rules kept as loaded"
                reporter.failed(exc, doing=f"{held} (snapshot {self.ruleset.version})")
            self.loaded_at = time.monotonic()  # retry at the next periodic reload, or on the next change
            return False
        finally:
            connection.close_if_unusable_or_obsolete()
        outage.POSTGRESQL.recovered()
        self.ruleset = ruleset
        self.rules_loaded = True
        self.loaded_at = time.monotonic()
        metrics.RULES_LOADED.set(ruleset.rule_count)
        metrics.RELOAD_SECONDS.observe(time.perf_counter() - started)
        logger.info("rule snapshot loaded", extra={"rules": ruleset.rule_count, "version": ruleset.version})
        return True

    def flush(self) -> None:
        """Pipelined mode: finish every batch in hand now: wait for the audit in progress, then alert
        and acknowledge what is audited (a batch the database refused is held for retry instead)."""
        while True:
            settled, self._unfinished = self._unfinished, None
            if settled is not None:
                self._collect(self._send_finish(settled))
            if self._writing is None:
                return
            self._land()

    @property
    def idle(self) -> bool:
        """Nothing held for retry, no audit in progress, no audited batch in hand, no read ahead."""
        return self._held is None and self._writing is None and self._unfinished is None and not self._reader.in_flight

    # --- the step -----------------------------------------------------------------------------

    def step(self, block_ms: int | None = None) -> int:
        """Do one batch of work; returns the number of entries finished (0 when idle or backing off).

        If Redis lost the group (restarted empty), it is created again and the next step reads on."""
        try:
            return self._step(block_ms)
        except redis.ResponseError as exc:
            if not streams.is_missing_group(exc):
                raise
            streams.recreate_group(self.client, self.stream, streams.ALERTERS_GROUP, consumer=self.consumer)
            return 0

    def _step(self, block_ms: int | None) -> int:
        self.refresh_rules(force=not self.rules_loaded)
        self.maintain_partitions()
        self.forget_dead_consumers()
        if not self.rules_loaded:
            # Matching against an empty snapshot would audit real pages as unhandled: wait for the rules.
            time.sleep(1)
            return 0
        if self._held is not None:
            return self._retry_held()
        if self._shedding():
            return self._finish_in_hand()
        claimed = self._claim_abandoned()
        if claimed:
            return self._run(_Batch(claimed, claimed=True))
        # With a batch in hand, look without waiting: if nothing is there, finish it before blocking.
        entries = self._read_new(block_ms if self.idle else 0)
        if not entries:
            self.flush()
            return 0
        if self.pipelined:
            try:
                self._send_read(0)  # read ahead, without waiting: the reply waits on its connection for the next step
            except redis.RedisError as exc:
                logger.warning("could not read the next batch ahead (%s); reading it when its turn comes", exc)
        return self._run(_Batch(entries))

    def _finish_in_hand(self) -> int:
        """While consumption pauses: run the entries read ahead before the backlog grew (they are this
        alerter's already; left unread they would sit unclaimed), else finish the batches in hand."""
        entries = self._take_read() if self._reader.in_flight else []
        if entries:
            return self._run(_Batch(entries))
        self.flush()
        return 0

    def _read_new(self, block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to a batch of new entries: those read ahead if a read is in flight, else read now, waiting
        up to ``block_ms`` (None: the ``alerter_block_ms`` setting; 0: not at all) for some to come."""
        if not self._reader.in_flight:
            self._send_read(get_setting("alerter_block_ms") if block_ms is None else block_ms)
        return self._take_read()

    def _send_read(self, block_ms: int) -> None:
        command: list[Any] = [
            "XREADGROUP", "GROUP", streams.ALERTERS_GROUP, self.consumer, "COUNT", get_setting("alerter_batch_size"),
        ]  # fmt: skip
        if block_ms:  # Redis's BLOCK 0 would mean "wait for ever"
            command += ["BLOCK", block_ms]
        self._reader.send(*command, "STREAMS", self.stream, ">")

    def _take_read(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The entries of the read in flight, from Redis's reply as it is: nil, or the one stream's
        entries as [id, [field, value, ...]] under its name (a map in RESP3, a pair in RESP2)."""
        reply = self._reader.result()
        if not reply:
            return []
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return [(entry_id, _field_dict(pairs)) for entry_id, pairs in entries]

    def _claim_abandoned(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Take over entries another alerter left unacknowledged for longer than the visibility timeout."""
        idle_seconds = get_setting("alerter_claim_idle_seconds")
        now = time.monotonic()
        if now - self._last_claim < min(idle_seconds / 2, 5.0):
            return []
        self._last_claim = now
        claimed = streams.claim_abandoned(
            self.client, self.stream, streams.ALERTERS_GROUP, self.consumer,
            idle_ms=int(idle_seconds * 1000), count=get_setting("alerter_batch_size"),
        )  # fmt: skip
        if claimed:
            metrics.RECLAIMED.inc(len(claimed))
            logger.warning("took over %d entries from a stalled alerter", len(claimed))
        return claimed

    def _run(self, batch: _Batch) -> int:
        """Evaluate the batch, audit it, then alert and acknowledge it; in pipelined mode the audit is
        handed to the writer thread and the rest happens in later steps (see ``_run_pipelined``).

        A database outage keeps the batch for a retry (nothing of it is acknowledged). A row the
        database refuses (bad data) goes to the DLQ alone; its neighbours are audited.
        """
        return self._run_pipelined(batch) if self.pipelined else self._run_serial(batch)

    def _run_serial(self, batch: _Batch) -> int:
        started = time.perf_counter()
        evaluated = self._rows(batch)
        try:
            audited, refused = self._audit(evaluated)
        except DatabaseError as exc:  # unreachable, or refusing for a reason of its own state
            return self._hold(batch, exc)
        outage.POSTGRESQL.recovered()
        self._collect(self._send_finish(self._settled(batch, evaluated, audited, refused, started)))
        return len(batch.entries)

    def _run_pipelined(self, batch: _Batch) -> int:
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
        finishing = self._send_finish(unfinished) if unfinished is not None else None
        try:
            evaluated = self._rows(batch)
        except BaseException:
            if finishing is not None:
                self._collect(finishing)
            self.flush()
            raise
        if finishing is not None:
            self._collect(finishing)
        if self._writing is not None:
            self._land()
        if self._held is not None:
            # The previous batch found the database down: keep this one with it, unaudited.
            self._held.entries.extend(batch.entries)
            self._held.claimed = self._held.claimed or batch.claimed
            return 0
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerter-audit")
        self._writing = _Writing(batch, evaluated, self._writer.submit(self._audit_in_writer, evaluated), started)
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
        self._unfinished = self._settled(writing.batch, writing.evaluated, audited, refused, writing.started)

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.submit(connections.close_all).result()  # the writer thread's own connection
        finally:
            writer.shutdown()

    def _hold(self, batch: _Batch, exc: Exception) -> int:
        if self._reader.in_flight:
            # Entries read ahead are this alerter's now: keep them with the batch (and refresh their
            # claim with it) rather than let them sit unseen until another alerter takes them over.
            try:
                batch.entries.extend(self._take_read())
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
            self._keep_claimed(batch)
            time.sleep(min(0.2, max(0.0, batch.retry_at - time.monotonic())))
            return 0
        self._held = None
        # Audited here and now, whatever the mode: while the database stays down, nothing new is read
        # and the held batch does not grow.
        return self._run_serial(batch)

    def _keep_claimed(self, batch: _Batch) -> None:
        ids = [entry_id for entry_id, _ in batch.entries]
        try:
            streams.keep_claimed(self.client, self.stream, streams.ALERTERS_GROUP, self.consumer, ids)
        except redis.RedisError as exc:
            if streams.is_missing_group(exc):  # Redis restarted empty: nothing to keep, but reads need the group
                streams.recreate_group(self.client, self.stream, streams.ALERTERS_GROUP, consumer=self.consumer)
            else:
                _warn_or_report(exc, "could not refresh the claim on held entries (%s)")

    # --- processing ---------------------------------------------------------------------------

    def _rows(self, batch: _Batch) -> _Evaluated:
        self._rule_bytes = get_setting("rule_max_message_bytes")  # once per batch, not per event
        decode = self._decoder(batch.entries, check_deliveries=batch.claimed)
        return _Evaluated(decode, self._evaluate, batch.entries)

    def _settled(
        self,
        batch: _Batch,
        rows: _Evaluated,
        evaluated: list[Any],
        refused: list[tuple[bytes, bytes, str, str]],
        started: float,
    ) -> _Settled:
        """An audited batch's Redis work: its alerts, flood counts, poison and acknowledgements."""
        poison = rows.poison + refused
        buckets: dict[str, str] = {}  # received hour -> dedup hash (a batch rarely spans two hours)
        alerts = []
        unmatched = []
        for item, _, alert, template in evaluated:
            event = item.event
            if alert is not None:
                received = event["received_at"]
                bucket = buckets.get(received[:13]) or buckets.setdefault(received[:13], dedup_key(received))
                alerts.append((bucket, event["event_id"], alert))
            elif template is not None:
                unmatched.append((event["hostname"], template, event.get("message") or ""))
        # Every entry is acknowledged: audited, or dead-lettered before the acknowledgement is sent.
        ack_ids = [entry_id for entry_id, _ in batch.entries]
        outcome = Outcome(entries=len(batch.entries), audited=len(evaluated), dead_lettered=len(poison))
        return _Settled(outcome, alerts, ack_ids, poison, unmatched, started)

    def _send_finish(self, settled: _Settled) -> _Finishing:
        """The Redis half, sent: dead-letter the poison, then send the script that adds the alerts and
        acknowledges the batch, and the flood-counting script; ``_collect`` reads what they did.

        A Redis error up to the acknowledgement is logged and counted, not raised: the batch's entries
        stay pending, and whoever takes them over after the claim timeout redoes them. That changes no
        audit row and no alert; the flood counter may count the redone batch's unmatched events a second
        time (the counting script is sent with, not after, the acknowledgement). The counts are sent only
        once the acknowledgement is; if they cannot be, that is logged alone and the batch still finishes.
        """
        finishing = _Finishing(settled)
        for later in (self._publish_later, self._count_later):
            if later.in_flight:  # never expected: a reply left unread would desynchronise the connection
                logger.error("a finishing script's reply was never read; dropping its connection")
                later.close()
        try:
            self._dead_letter(settled.poison)
            calls = self._publish_calls(settled.alerts, settled.ack_ids)
            for keys, args in calls[:-1]:  # another hour's alerts: rare (a batch across an hour's turn)
                finishing.alerts += int(self._publish(keys=keys, args=args))
            if calls:
                self._publish_later.send(*calls[-1])
        except redis.RedisError as exc:
            finishing.failed = exc
            return finishing
        try:
            finishing.counting = flood.Counting.of(
                settled.unmatched,
                threshold=get_setting("unhandled_threshold"),
                window_seconds=int(get_setting("unhandled_window_seconds")),
            )
            if finishing.counting is not None:
                self._count_later.send(finishing.counting.keys, finishing.counting.args)
        except redis.RedisError as exc:
            finishing.counting = None
            logger.error("could not count %d unmatched events for flood detection (%s)", len(settled.unmatched), exc)
        return finishing

    def _collect(self, finishing: _Finishing) -> Outcome:
        """Read what the finishing scripts did, raise the floods they found, record the batch. Never
        raises: whatever fails here leaves the entries pending (see ``_send_finish``)."""
        outcome = finishing.settled.outcome
        outcome.unmatched = len(finishing.settled.unmatched)
        failure = finishing.failed
        try:
            if self._publish_later.in_flight:
                finishing.alerts += int(self._publish_later.result())
        except Exception as exc:
            failure = failure or exc
        floods: list[flood.Flood] = []
        try:
            if self._count_later.in_flight and finishing.counting is not None:
                floods = finishing.counting.floods(self._count_later.result())
        except Exception as exc:
            logger.error("could not count %d unmatched events for flood detection (%s)", outcome.unmatched, exc)
        outcome.alerts = finishing.alerts
        if failure is not None:
            metrics.FINISH_FAILURES.inc()
            logger.error(
                "could not alert and acknowledge %d audited entries (%s); they stay pending and are redone "
                "after the claim timeout",
                len(finishing.settled.ack_ids),
                failure,
            )
            return outcome
        try:
            outcome.floods = self._raise_floods(floods)
        except Exception as exc:
            logger.error("could not raise %d flood meta-alerts (%s); later batches propose them", len(floods), exc)
        self._trim()
        metrics.EVENTS.labels("audited").inc(outcome.audited)
        metrics.EVENTS.labels("alerted").inc(outcome.alerts)
        metrics.EVENTS.labels("unmatched").inc(outcome.unmatched)
        metrics.EVENTS.labels("dead_lettered").inc(outcome.dead_lettered)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - finishing.settled.started)
        return outcome

    def _audit_in_writer(self, rows: _Evaluated) -> tuple[list[Any], list[tuple[bytes, bytes, str, str]]]:
        """``_audit`` in the writer thread, whose connection the worker loop never sees: now and then it
        is checked the way the loop checks the main thread's (closed when past its age or broken)."""
        now = time.monotonic()
        if now >= self._writer_checked_at + WRITER_CONNECTION_CHECK_SECONDS:
            self._writer_checked_at = now
            close_old_connections()
        return self._audit(rows)

    def _audit(self, rows: _Evaluated) -> tuple[list[Any], list[tuple[bytes, bytes, str, str]]]:
        """Write the batch's audit rows in one transaction: one COPY; on a redelivered event, one
        INSERT ... ON CONFLICT DO NOTHING; if the database refuses the data, find the rows it refuses.
        Returns the evaluated events that are audited and the poison of the refused rows.

        Runs in the writer thread in pipelined mode, on that thread's own connection. psycopg2's own
        errors are wrapped into Django's, so an unreachable database surfaces as OperationalError or
        InterfaceError (an outage: the caller holds the batch) whichever call hits it; the broken
        connection is closed so that the next attempt opens a new one. A refusal that does not blame the
        data (``blames_the_data``) is raised as an outage too, whichever row it came from.
        """
        try:
            return self._write(rows)
        except DatabaseError:
            # Unreachable, or refusing for a reason of its own state (``_write`` raises no other): a new
            # connection may find a new primary, so do not keep this one.
            connection.close()
            raise

    def _write(self, rows: _Evaluated) -> tuple[list[Any], list[tuple[bytes, bytes, str, str]]]:
        audited, refused = self._write_evaluated(rows)
        if rows.dead:
            refused = refused + self._write_dead(rows.dead)
        return audited, refused

    def _write_evaluated(self, rows: _Evaluated) -> tuple[list[Any], list[tuple[bytes, bytes, str, str]]]:
        evaluated = rows.evaluated
        if not evaluated:
            return [], []
        # Each statement below is its own transaction (Django's connections autocommit): one COPY or one
        # INSERT writes the whole batch or nothing, with no BEGIN and COMMIT round trips around it.
        try:
            with connection.cursor() as cursor, connection.wrap_database_errors:
                # One read of the whole text: one send, during which psycopg2 lets other threads run.
                cursor.cursor.copy_expert(_COPY_SQL, io.BytesIO(rows.copy), size=len(rows.copy) + 1)
            return evaluated, []
        except (OperationalError, InterfaceError):
            raise
        except IntegrityError:
            metrics.AUDIT_REDELIVERED_BATCHES.inc()  # some event of the batch is audited already
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            logger.warning("the database refused a batch (%s); inserting row by row to isolate it", exc)
            return self._insert_rows_alone(evaluated)
        try:
            with connection.cursor() as cursor, connection.wrap_database_errors:
                values = [_insert_values(row) for _, row, *_ in evaluated]
                execute_values(cursor.cursor, _INSERT_SQL, values, template=_INSERT_TEMPLATE, page_size=len(values))
            self._revive(values)
            return evaluated, []
        except (OperationalError, InterfaceError):
            raise
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            logger.warning("the database refused a batch (%s); inserting row by row to isolate it", exc)
        return self._insert_rows_alone(evaluated)

    def _insert_rows_alone(self, evaluated: list[Any]) -> tuple[list[Any], list[tuple[bytes, bytes, str, str]]]:
        kept, refused = [], []
        with transaction.atomic():
            for entry in evaluated:
                item, row, *_ = entry
                try:
                    with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                        execute_values(cursor.cursor, _INSERT_SQL, [_insert_values(row)], template=_INSERT_TEMPLATE)
                    kept.append(entry)
                except (OperationalError, InterfaceError):
                    raise
                except (DatabaseError, ValueError) as exc:
                    if not blames_the_data(exc):
                        raise
                    refused.append((item.entry_id, item.raw, "processing_error", f"{type(exc).__name__}: {exc}"))
            if kept:
                self._revive([_insert_values(row) for _, row, *_ in kept])
        return kept, refused

    def _revive(self, values: list[tuple[str | None, ...]]) -> None:
        """Give the rows of events dead-lettered earlier and now replayed (in a redelivered batch: their row
        made the COPY fail) the outcome of this audit. A separate statement after the INSERT: a crash in
        between leaves the entries pending, and the redone batch updates them. A refusal of the data here
        (not expected: the INSERT took the same values) leaves those rows as they were, logged."""
        try:
            with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                execute_values(cursor.cursor, _REVIVE_SQL, values, page_size=len(values))
        except (OperationalError, InterfaceError):
            raise
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            logger.warning("could not update the audit rows of replayed dead-lettered events (%s)", exc)

    def _write_dead(self, dead: list[tuple[_Decoded, tuple[Any, ...]]]) -> list[tuple[bytes, bytes, str, str]]:
        """Audit the events dead-lettered before evaluation (``handling`` dead_lettered, with the reason); an
        event audited already keeps its row. Returns their poison for the DLQ. A row the database refuses
        for its data leaves its event unaudited: the DLQ entry's error says so."""
        refusals: dict[bytes, str] = {}
        try:
            with connection.cursor() as cursor, connection.wrap_database_errors:
                values = [_insert_values(row) for _, row in dead]
                execute_values(
                    cursor.cursor, _INSERT_DEAD_SQL, values, template=_INSERT_DEAD_TEMPLATE, page_size=len(values)
                )
        except (OperationalError, InterfaceError):
            raise
        except (DatabaseError, ValueError) as exc:
            if not blames_the_data(exc):
                raise
            with transaction.atomic():
                for item, row in dead:
                    try:
                        with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                            execute_values(
                                cursor.cursor, _INSERT_DEAD_SQL, [_insert_values(row)], template=_INSERT_DEAD_TEMPLATE
                            )
                    except (OperationalError, InterfaceError):
                        raise
                    except (DatabaseError, ValueError) as row_exc:
                        if not blames_the_data(row_exc):
                            raise
                        refusals[item.entry_id] = f"{type(row_exc).__name__}: {row_exc}"
            if refusals:
                logger.warning("the database refused the audit rows of %d dead-lettered events", len(refusals))
        poison = []
        for item, _ in dead:
            reason, error = item.dead_letter or ("", "")
            refusal = refusals.get(item.entry_id)
            poison.append((item.entry_id, item.raw, reason, f"{error}; not audited: {refusal}" if refusal else error))
        return poison

    def _decoder(self, entries: list[tuple[bytes, dict[bytes, bytes]]], *, check_deliveries: bool) -> Any:
        """A function from one entry to its event, or to its poison (entry id, raw payload, reason, error)."""
        counts = self._delivery_counts(entries) if check_deliveries else {}
        limit = get_setting("alerter_max_deliveries")
        required = ("event_id", "hostname", "received_at", "timestamp")

        def decode(entry_id: bytes, fields: dict[bytes, bytes]) -> _Decoded | tuple[bytes, bytes, str, str]:
            try:
                event = streams.decode(fields)
                if not (
                    event.get("event_id")
                    and event.get("hostname")
                    and event.get("received_at")
                    and event.get("timestamp")
                ):
                    missing = next(name for name in required if not event.get(name))
                    raise ValueError(f"event has no {missing}")
            except (ValueError, orjson.JSONDecodeError) as exc:
                raw = fields.get(streams.PAYLOAD_FIELD) or orjson.dumps(
                    {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
                )
                return (entry_id, raw, "malformed", str(exc))
            if counts and counts.get(entry_id, 1) > limit:
                why = f"delivered {counts[entry_id]} times"
                return _Decoded(entry_id, event, fields[streams.PAYLOAD_FIELD], ("max_deliveries", why))
            return _Decoded(entry_id, event, fields[streams.PAYLOAD_FIELD])

        return decode

    def _delivery_counts(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> dict[bytes, int]:
        if not entries:
            return {}
        # A batch held through an outage may hold entries out of stream order: bound it by its extremes.
        ids = sorted((entry_id for entry_id, _ in entries), key=_stream_position)
        rows: list[dict[str, Any]] = self.client.xpending_range(
            self.stream, streams.ALERTERS_GROUP, min=ids[0], max=ids[-1], count=len(entries) * 2,
            consumername=self.consumer,
        )  # fmt: skip
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    def _evaluate(self, item: _Decoded) -> tuple[tuple[Any, ...], bytes | None, str | None]:
        """One event's audit row, its alert payload if it alerts, and its flood template if no rule
        explains it."""
        event = item.event
        get = event.get
        hostname = event["hostname"]
        message = get("message") or ""
        trap_oid = get("trap_oid") or ""
        syslog_severity = get("syslog_severity")
        environment, rule, handling, team = self.ruleset.decide(
            hostname, clip_message(message, self._rule_bytes), trap_oid or None, syslog_severity
        )
        source_type = get("source_type") or ""
        correlation_id = get("correlation_id") or ""
        row: tuple[Any, ...]
        if rule is None:  # unhandled: no alert, no severity, and a template for the flood detector
            row = (
                event["event_id"], event["timestamp"], event["received_at"], hostname, environment, None, handling,
                team, False, "", syslog_severity, message, trap_oid, source_type[:50], correlation_id[:128],
                item.raw.decode(),
            )  # fmt: skip
            return row, None, flood.template_of(message)
        alerting = handling in ALERTING
        severity = rule.severity or SEVERITY_FROM_SYSLOG.get(syslog_severity, "")
        row = (
            event["event_id"], event["timestamp"], event["received_at"], hostname, environment, rule.id, handling,
            team, alerting, severity, syslog_severity, message, trap_oid, source_type[:50], correlation_id[:128],
            item.raw.decode(),
        )  # fmt: skip
        if not alerting:
            return row, None, None
        if get("variables") and exactjson.may_hold_long_integer(item.raw):
            # orjson read an integer past 64 bits as a float; the alert sends the varbinds on: read them exactly.
            event = exactjson.loads_exact(item.raw)
        alert = rule_alert(event, rule, team=team, severity=severity, handling=handling, environment=environment)
        return row, streams.dumps(alert), None  # orjson, or exact for an integer past 64 bits

    def _publish_and_ack(self, alerts: list[tuple[str, str, bytes]], ack_ids: list[bytes]) -> int:
        """Add alerts not added before and acknowledge entries, atomically per dedup bucket."""
        return sum(int(self._publish(keys=keys, args=args)) for keys, args in self._publish_calls(alerts, ack_ids))

    def _publish_calls(
        self, alerts: list[tuple[str, str, bytes]], ack_ids: list[bytes]
    ) -> list[tuple[list[Any], list[Any]]]:
        """The publish script's (keys, args) per dedup bucket (the events of a batch almost always share
        the hour); the acknowledgements ride with the last call, so they happen only once every alert is
        added."""
        if not alerts and not ack_ids:
            return []
        buckets: dict[str, list[tuple[str, bytes]]] = {}
        for bucket, event_id, payload in alerts:
            buckets.setdefault(bucket, []).append((event_id, payload))
        if not buckets:
            buckets[dedup_key(datetime.now(UTC).isoformat())] = []
        calls = []
        for index, (bucket, items) in enumerate(buckets.items()):
            args: list[Any] = [streams.ALERTERS_GROUP, DEDUP_TTL_SECONDS, len(items), streams.FORWARDERS_GROUP]
            for event_id, payload in items:
                args += [event_id, payload]
            if index == len(buckets) - 1:
                args += ack_ids
            calls.append(([self.alerts, self.stream, bucket], args))
        return calls

    def _dead_letter(self, poison: list[tuple[bytes, bytes, str, str]]) -> None:
        """Record each entry in the alerter DLQ with reason, error and the original payload."""
        if not poison:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry_id, raw, reason, error in poison:
            pipe.xadd(
                self.dlq,
                {
                    "reason": reason,
                    "error": error[:1000],
                    "attempts": 1,
                    "source_id": entry_id,
                    "failed_at": datetime.now(UTC).isoformat(),
                    "consumer": self.consumer,
                    "e": raw,
                },
            )
        pipe.execute()
        logger.warning("moved %d entries to the alerter DLQ", len(poison), extra={"reasons": [p[2] for p in poison]})

    def _raise_floods(self, floods: list[flood.Flood]) -> int:
        now = datetime.now(UTC).isoformat()
        raised = 0
        for detected in floods:
            team = self.ruleset.team_of(detected.hostname) or get_setting("unhandled_default_team")
            alert = flood.meta_alert(detected, team=team, received_at=now)
            bucket = flood.dedup_bucket(detected.window_start)
            if self._publish_and_ack([(bucket, alert["event_id"], orjson.dumps(alert))], []):
                raised += 1
                logger.warning("unmatched-event flood", extra={"host": detected.hostname, "count": detected.count})
        metrics.FLOODS.inc(raised)
        return raised

    def _trim(self) -> None:
        """Drop acknowledged entries (so XLEN is the backlog) and report queue depths, at most once a second.

        The publish script already deletes what it acknowledges; this is the safety net for entries
        acknowledged elsewhere, so it need not cost a round trip per batch.
        """
        now = time.monotonic()
        if now - self._trimmed_at < TRIM_INTERVAL_SECONDS:
            return
        self._trimmed_at = now
        try:
            streams.trim_acknowledged(self.client, self.stream)
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.stream)
            pipe.xlen(self.dlq)
            lag, dlq_depth = pipe.execute()
        except redis.RedisError as exc:
            _warn_or_report(exc, "could not trim the ingest stream (%s)")
            return
        outage.REDIS.recovered()
        metrics.INGEST_LAG.set(lag)
        metrics.DLQ_DEPTH.set(dlq_depth)

    # --- load shedding ------------------------------------------------------------------------

    def _shedding(self) -> bool:
        """True when this step must not consume (defer mode above the shed threshold).

        A backlog under the warning threshold is trusted for ``BACKLOG_CLEAR_SECONDS``: at full speed
        that spares a round trip on most batches, and a backlog cannot grow far in that time.
        """
        now = time.monotonic()
        if now < self._backlog_clear_until:
            return False
        backlog = streams.backlog(self.client, self.alerts)
        metrics.ALERT_BACKLOG.set(backlog)
        if backlog <= get_setting("alerter_queue_warn_threshold"):
            self._backlog_clear_until = now + BACKLOG_CLEAR_SECONDS
            return False
        shed_at = get_setting("alerter_queue_shed_threshold")
        if backlog <= shed_at:
            metrics.QUEUE_WARNINGS.inc()
            logger.warning("alert backlog %d above the warning threshold", backlog)
            return False
        mode = get_setting("alerter_shed_mode")
        metrics.SHED_STEPS.labels(mode).inc()
        if mode == "defer":
            logger.warning("alert backlog %d above the shed threshold; pausing consumption", backlog)
            time.sleep(0.5)
            return True
        entries = self._read_new(block_ms=0)
        self._shed(entries, f"alert backlog {backlog} > {shed_at}")
        return True

    def _shed(self, entries: list[tuple[bytes, dict[bytes, bytes]]], why: str) -> None:
        """Mode ``dlq``: move ``entries`` to the DLQ unmatched. They are dead-lettered as surely as entries past
        the delivery limit, so they are audited the same way (handling dead_lettered, reason ``shed: ...``) and
        a replay updates the row to the real outcome. (Mode ``defer`` moves nothing: its entries stay queued.)
        An entry that is no event goes as malformed. If the database is down, nothing is moved: the entries are
        held as a batch the database refused (backoff, claim kept, nothing new read meanwhile) and processed
        when it is back."""
        if not entries:
            return
        decode = self._decoder(entries, check_deliveries=False)
        dead: list[tuple[_Decoded, tuple[Any, ...]]] = []
        poison: list[tuple[bytes, bytes, str, str]] = []
        for entry_id, fields in entries:
            item = decode(entry_id, fields)
            if isinstance(item, tuple):
                poison.append(item)
                continue
            item.dead_letter = ("shed", why)
            dead.append((item, dead_letter_row(item)))
        try:
            poison += self._write_dead(dead) if dead else []
        except DatabaseError as exc:
            connection.close()  # as _audit does: the next attempt opens a new connection
            # Held as _hold holds any batch: without it each step would read (and claim) one more batch.
            self._hold(_Batch(entries), exc)
            return
        self._dead_letter(poison)
        self._publish_and_ack([], [entry_id for entry_id, _ in entries])
        metrics.EVENTS.labels("shed").inc(len(entries))
