"""The canonical event: the one shape every source (HTTP, syslog, SNMP traps) is turned into.

Every key is always present, so consumers (the alerter, the audit log, Moogsoft mapping) never guess;
optional facts are ``None``. Fields a source sends that are not canonical are kept under ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypedDict

from ingest import fields
from ingest.fields import FieldError
from ingest.ids import uuid7

DEFAULT_SOURCE_TYPE = "webhook"


class CanonicalEvent(TypedDict):
    event_id: str  # UUID v7 (time-ordered), stamped at ingest; the dedup key downstream
    hostname: str  # stripped, lower-case
    message: str  # "" for a trap sent without one
    timestamp: str  # ISO 8601, UTC, microseconds: when the event happened
    timestamp_inferred: bool  # true when the source sent no timestamp and received_at was used
    syslog_severity: int | None  # 0 (emergency) … 7 (debug)
    facility: int | None  # 0 … 23
    trap_oid: str | None  # dotted numeric, no leading dot
    source_type: str  # "webhook" unless the source says otherwise ("syslog", "snmp_trap", …)
    source_ip: str | None
    variables: dict[str, Any] | list[Any] | None  # trap varbinds
    extra: dict[str, Any]  # every other field the source sent, unchanged
    received_at: str  # ISO 8601, UTC, microseconds: when MUTT received it
    correlation_id: str  # the request id of the ingest request (X-Request-ID)
    ingested_by: str  # name of the API key (or listener) that brought it in


FieldErrors = dict[str, str]

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


def normalise(
    item: Any, *, received_at: datetime, correlation_id: str, ingested_by: str
) -> tuple[CanonicalEvent | None, FieldErrors]:
    """The canonical event for one incoming item, or ``(None, {field: message})`` naming every problem."""
    if not isinstance(item, dict):
        return None, {"item": "must be a JSON object"}
    errors: FieldErrors = {}
    parsed: dict[str, Any] = {}
    for name, parse in _OPTIONAL.items():
        value = item.get(name)
        if value is None:
            parsed[name] = None
            continue
        try:
            parsed[name] = parse(value)
        except FieldError as exc:
            errors[name] = str(exc)

    host = _required(item, "hostname", fields.hostname, errors)
    text = item.get("message")
    if text is None:
        if parsed["trap_oid"] is None and "trap_oid" not in errors:
            errors["message"] = "is required unless trap_oid is given"
        text = ""
    else:
        text = _parse(fields.message, text, "message", errors)

    raw_time = item.get("timestamp")
    moment = received_at if raw_time is None else _parse(fields.timestamp, raw_time, "timestamp", errors)
    if errors:
        return None, errors

    event: CanonicalEvent = {
        "event_id": uuid7(),
        "hostname": host,
        "message": text,
        "timestamp": fields.isoformat(moment),
        "timestamp_inferred": raw_time is None,
        "syslog_severity": parsed["syslog_severity"],
        "facility": parsed["facility"],
        "trap_oid": parsed["trap_oid"],
        "source_type": parsed["source_type"] or DEFAULT_SOURCE_TYPE,
        "source_ip": parsed["source_ip"],
        "variables": parsed["variables"],
        "extra": {k: v for k, v in item.items() if k not in INPUT_FIELDS},
        "received_at": fields.isoformat(received_at),
        "correlation_id": correlation_id,
        "ingested_by": ingested_by,
    }
    return event, errors


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
        return None
