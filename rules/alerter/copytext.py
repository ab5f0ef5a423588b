"""Audit rows in PostgreSQL COPY's text format: the bytes the audit writer sends in one COPY per batch.

Pure formatting, no database: the alerter's thread formats a batch (``evaluate.Evaluated``) while the
writer thread may be sending the one before it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# The audit row's columns, in the order ``evaluate`` makes its rows and the audit writer names them.
AUDIT_COLUMNS = (
    "event_id", "event_time", "received_at", "hostname", "environment", "rule_id", "handling", "team", "forwarded",
    "alert_severity", "syslog_severity", "message", "trap_oid", "source_type", "correlation_id", "raw",
)  # fmt: skip

_COPY_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]").search
_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


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
    """``copy_line`` for an audit row (``AUDIT_COLUMNS``, as ``evaluate.evaluator`` makes it), formatted in
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
