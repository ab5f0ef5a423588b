"""Decode a batch of ingest entries and match each event against the compiled rules: pure Python.

Per event: decode the entry (``decoder``), then make its audit row, its alert payload if it alerts,
and its flood template if no rule explains it (``evaluator``); ``Evaluated`` does a whole batch and
formats its audit rows for COPY. Nothing here touches Redis or the database: the step loop reads the
entries (and, for a takeover, their delivery counts) before, and the audit writer and the finisher
use the result after. The per-event functions are closures made once per batch, so the loop over the
entries reads local names, not attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from core import exactjson, streams
from core.contracts import (
    ALERTING,
    DEAD_LETTERED,
    MALFORMED,
    MAX_DELIVERIES,
    PAYLOAD_FIELD,
    PROCESSING_ERROR,
    REQUIRED_EVENT_FIELDS,
)
from rules import flood
from rules.alerter.copytext import audit_copy_line, copy_text
from rules.alerts import rule_alert
from rules.engine import SEVERITY_FROM_SYSLOG, RuleSet, clip_message

Entry = tuple[bytes, dict[bytes, bytes]]  # (entry id, fields) as read from the ingest stream
Poison = tuple[bytes, bytes, str, str]  # (entry id, raw payload, reason, error): what goes to the alerter DLQ


@dataclass(slots=True)
class Decoded:
    entry_id: bytes
    event: dict[str, Any]
    raw: bytes  # the entry's JSON as ingest wrote it: stored as the audit row's raw event, not re-encoded
    dead_letter: tuple[str, str] | None = None  # (reason, error): audit as dead-lettered, do not evaluate


def dead_letter_row(item: Decoded) -> tuple[Any, ...]:
    """The audit row of an event dead-lettered before evaluation: its own fields, no rule, handling
    ``dead_lettered``, and the reason (the audit writer's dead-letter INSERT's columns). The event is not
    matched: it may be the very event that made alerters fail."""
    event = item.event
    get = event.get
    reason, error = item.dead_letter or ("", "")
    return (
        event["event_id"], event["timestamp"], event["received_at"], event["hostname"], "", None, DEAD_LETTERED,
        "", False, "", get("syslog_severity"), get("message") or "", get("trap_oid") or "",
        (get("source_type") or "")[:50], (get("correlation_id") or "")[:128], item.raw.decode(),
        f"{reason}: {error}"[:200],
    )  # fmt: skip


def decoder(counts: dict[bytes, int], limit: int) -> Callable[[bytes, dict[bytes, bytes]], Decoded | Poison]:
    """A function from one entry to its event, or to its poison. ``counts``: the entries' delivery counts
    (a takeover's; empty otherwise); an entry delivered more than ``limit`` times is to be dead-lettered."""
    required = REQUIRED_EVENT_FIELDS

    def decode(entry_id: bytes, fields: dict[bytes, bytes]) -> Decoded | Poison:
        try:
            event = streams.decode(fields)
            if not (
                event.get("event_id") and event.get("hostname") and event.get("received_at") and event.get("timestamp")
            ):
                missing = next(name for name in required if not event.get(name))
                raise ValueError(f"event has no {missing}")
        except (ValueError, orjson.JSONDecodeError) as exc:
            raw = fields.get(PAYLOAD_FIELD) or orjson.dumps(
                {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
            )
            return (entry_id, raw, MALFORMED, str(exc))
        if counts and counts.get(entry_id, 1) > limit:
            why = f"delivered {counts[entry_id]} times"
            return Decoded(entry_id, event, fields[PAYLOAD_FIELD], (MAX_DELIVERIES, why))
        return Decoded(entry_id, event, fields[PAYLOAD_FIELD])

    return decode


def evaluator(
    ruleset: RuleSet, rule_bytes: int
) -> Callable[[Decoded], tuple[tuple[Any, ...], bytes | None, str | None]]:
    """A function from one event to its audit row, its alert payload if it alerts, and its flood template
    if no rule explains it. ``rule_bytes``: how much of a message the rules see (rule_max_message_bytes)."""
    decide = ruleset.decide

    def evaluate(item: Decoded) -> tuple[tuple[Any, ...], bytes | None, str | None]:
        event = item.event
        get = event.get
        hostname = event["hostname"]
        message = get("message") or ""
        trap_oid = get("trap_oid") or ""
        syslog_severity = get("syslog_severity")
        environment, rule, handling, team = decide(
            hostname, clip_message(message, rule_bytes), trap_oid or None, syslog_severity
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

    return evaluate


class Evaluated:
    """A batch decoded and evaluated: each event with its audit row, alert payload and flood template,
    the entries that are poison, and the audit rows in COPY's text format, ready to send.

    Evaluation runs in the alerter's thread; the COPY may run in the audit writer's thread (pipelined
    mode), so nothing here touches the database.
    """

    def __init__(self, decode: Any, evaluate: Any, entries: list[Entry]) -> None:
        # (event, audit row, alert payload or None, flood template of an unhandled event or None)
        self.evaluated: list[tuple[Decoded, tuple[Any, ...], bytes | None, str | None]] = []
        self.poison: list[Poison] = []
        # Events dead-lettered before evaluation (delivered too often), with their audit rows.
        self.dead: list[tuple[Decoded, tuple[Any, ...]]] = []
        rows: list[tuple[Any, ...]] = []
        for entry_id, fields in entries:
            try:
                item = decode(entry_id, fields)
            except Exception as exc:
                raw = fields.get(PAYLOAD_FIELD) or repr(fields).encode()
                self.poison.append((entry_id, raw, MALFORMED, f"{type(exc).__name__}: {exc}"))
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
                self.poison.append((item.entry_id, item.raw, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
                continue
            self.evaluated.append((item, row, alert, template))
            rows.append(row)
        self.copy = copy_text(rows, audit_copy_line) if rows else b""
