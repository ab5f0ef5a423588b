"""An incoming item made into the canonical event (``core.contracts.CanonicalEvent``), the one shape every
source (HTTP, syslog, SNMP traps) is turned into, and the event as the JSON queued for the alerters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core import exactjson
from core.contracts import DEFAULT_SOURCE_TYPE, CanonicalEvent
from core.ids import uuid7
from ingest import fields
from ingest.fields import FieldError

logger = logging.getLogger("mutt.ingest")

INVALID_VALUE = "is not a valid value"
NUL_ERROR = "contains a NUL character"
NUL_NAME_ERROR = "has a field name containing a NUL character"
TOO_DEEP_ERROR = "is nested too deeply to be stored; keep objects and arrays under 250 levels"
# How orjson writes U+0000, which PostgreSQL text and jsonb refuse.
_NUL_ESCAPE = b"\\u0000"


FieldErrors = dict[str, str]
# An event at the retention horizon is audited later than it was received (the alerters' backlog); the
# margin keeps its partition from being dropped meanwhile: a partition goes once its whole range is past
# the horizon, which for an event kept as sent is at least this long after it was received.
RETENTION_MARGIN_SECONDS = 3600.0


@dataclass(frozen=True)
class Receipt:
    """What every event of one request shares: when it arrived, which request, through which key, and
    the range of event times taken as sent (the ``max_event_age`` and ``max_clock_skew`` settings, in
    seconds; None: unbounded). The oldest time taken is also bounded by the retention horizon
    (``event_retention_days``, less a margin): an older event would land in a month whose audit
    partition was already archived and dropped, and recreate it (ADR-015)."""

    received_at: datetime
    correlation_id: str  # the request id of the ingest request (X-Request-ID)
    ingested_by: str  # name of the API key (or listener)
    max_event_age: float | None = None
    max_clock_skew: float | None = None
    retention_days: float | None = None
    received_at_text: str = field(init=False)  # formatted once per request, not per event
    earliest: datetime = field(init=False)
    latest: datetime = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "received_at_text", fields.isoformat(self.received_at))
        age, skew = self.max_event_age, self.max_clock_skew
        if self.retention_days is not None:
            horizon = self.retention_days * 86_400.0 - RETENTION_MARGIN_SECONDS
            age = horizon if age is None else min(age, horizon)
        object.__setattr__(
            self,
            "earliest",
            datetime.min.replace(tzinfo=UTC) if age is None else self.received_at - timedelta(seconds=age),
        )
        object.__setattr__(
            self,
            "latest",
            datetime.max.replace(tzinfo=UTC) if skew is None else self.received_at + timedelta(seconds=skew),
        )


# Optional input fields and their parsers; a null value counts as absent.
_OPTIONAL: dict[str, Callable[[Any], Any]] = {
    "syslog_severity": fields.syslog_severity,
    "facility": fields.facility,
    "trap_oid": fields.trap_oid,
    "source_type": fields.source_type,
    "source_ip": fields.source_ip,
    "variables": fields.variables,
}
INPUT_FIELDS = frozenset({"hostname", "message", "timestamp", *_OPTIONAL})


def normalise(item: Any, receipt: Receipt) -> tuple[CanonicalEvent | None, FieldErrors]:
    """The canonical event for one incoming item, or ``(None, {field: message})`` naming every problem."""
    if not isinstance(item, dict):
        return None, {"item": "must be a JSON object"}
    errors: FieldErrors = {}
    parsed: dict[str, Any] = {}
    for name, parse in _OPTIONAL.items():
        value = item.get(name)
        parsed[name] = None if value is None else _parse(parse, value, name, errors)

    host = _required(item, "hostname", fields.hostname, errors)
    text = item.get("message")
    if text is None:
        if parsed["trap_oid"] is None and "trap_oid" not in errors:
            errors["message"] = "is required unless trap_oid is given"
        text = ""
    else:
        text = _parse(fields.message, text, "message", errors)

    raw_time = item.get("timestamp")
    moment = None if raw_time is None else _parse(fields.timestamp, raw_time, "timestamp", errors)
    if errors:
        return None, errors
    original = None
    if moment is None:
        when = receipt.received_at_text
    elif receipt.earliest <= moment <= receipt.latest:
        when = fields.isoformat(moment)
    else:
        # Kept, never refused: a sender's wrong clock is no reason to lose its event. Its time must not
        # place it in a month's audit partition that does not exist yet, or in one already dropped.
        when, original = receipt.received_at_text, fields.isoformat(moment)

    event: CanonicalEvent = {
        "event_id": uuid7(),
        "hostname": host,
        "message": text,
        "timestamp": when,
        "timestamp_inferred": raw_time is None,
        "timestamp_corrected": original is not None,
        "original_timestamp": original,
        "syslog_severity": parsed["syslog_severity"],
        "facility": parsed["facility"],
        "trap_oid": parsed["trap_oid"],
        "source_type": parsed["source_type"] or DEFAULT_SOURCE_TYPE,
        "source_ip": parsed["source_ip"],
        "variables": parsed["variables"],
        "extra": {k: v for k, v in item.items() if k not in INPUT_FIELDS},
        "received_at": receipt.received_at_text,
        "correlation_id": receipt.correlation_id,
        "ingested_by": receipt.ingested_by,
    }
    return event, errors


def encode(event: CanonicalEvent, item: Mapping[str, Any]) -> tuple[bytes | None, FieldErrors]:
    """The event as the JSON queued for the alerters, or ``(None, {field: message})`` when the
    database could not store it; ``item`` is what the event was made from, to name the field."""
    payload = exactjson.dumps(event)
    if payload is None:
        # orjson reads 1,024 levels of nesting but writes only 254; nothing else in an event can fail
        # (integers past 64 bits are written by exactjson).
        return None, {"item": TOO_DEEP_ERROR}
    # One scan of the bytes clears almost every event. A hit is a NUL, or text that merely reads
    # backslash-u0000 (escaped as \\u0000); only the walk over the item tells them apart.
    if _NUL_ESCAPE in payload:
        errors = _nul_errors(item)
        if errors:
            return None, errors
    return payload, {}


def _nul_errors(item: Mapping[str, Any]) -> FieldErrors:
    errors: FieldErrors = {}
    for name, value in item.items():
        if "\x00" in name:
            errors["item"] = NUL_NAME_ERROR
        elif _holds_nul(value):
            errors[name] = NUL_ERROR
    return errors


def _holds_nul(value: Any) -> bool:
    """Whether a NUL is in ``value`` or anything inside it, keys included (a loop: items nest deeply)."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return True
        elif isinstance(current, dict):
            if any("\x00" in key for key in current):
                return True
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return False


def _required(item: dict[str, Any], name: str, parse: Callable[[Any], Any], errors: FieldErrors) -> Any:
    value = item.get(name)
    if value is None:
        errors[name] = "is required"
        return None
    return _parse(parse, value, name, errors)


def _parse(parse: Callable[[Any], Any], value: Any, name: str, errors: FieldErrors) -> Any:
    try:
        return parse(value)
    except FieldError as exc:
        errors[name] = str(exc)
    except ValueError as exc:
        # A limit the parser did not foresee (int()'s 4,300 digits was one): refuse the item, not the
        # batch. Not the value in the log: it may be 64 KiB.
        logger.warning("ingest: the %s parser raised %s; the item is rejected", name, type(exc).__name__)
        errors[name] = INVALID_VALUE
    return None
