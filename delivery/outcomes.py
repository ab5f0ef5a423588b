"""How a request to a destination ended, and what becomes of its alerts: retried later or dead-lettered.

Plain functions of the answer and the alerts, the same for every destination: any 2xx is delivered; 408,
429, 5xx, timeouts and connection errors are retried (full-jitter backoff, or Retry-After); 401 and 403 are
retried without using up an attempt (the destination refused our credential: its outage, not the alerts'
fault); any other 4xx, and an alert that cannot be mapped, is dead-lettered at once. The forwarder
(delivery/forwarder.py) writes what these decide.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis.typing import EncodableT, FieldT

from configcenter.runtime import SettingsView
from core import streams
from core.contracts import MALFORMED, RETRIES_EXHAUSTED, MoogDeadLetter, http_reason
from delivery.destinations import PayloadError, Request
from delivery.retry import backoff_delay
from delivery.transport import TransportError

RETRYABLE_STATUSES = frozenset({408, 429})
# The destination refusing the credential is its outage (a key rotated on one side only), not a fault of the
# alerts: it opens the breaker and holds alerts like a 503, and uses up none of their retries.
AUTH_STATUSES = frozenset({401, 403})

Item = tuple[bytes, dict[str, Any]]  # (stream entry id, alert)


@dataclass(frozen=True)
class Result:
    """How one request ended: ``delivered``, ``retry`` or ``permanent``, with a reason code."""

    outcome: str
    reason: str
    status: int | None = None
    retry_after: float | None = None
    excerpt: str = ""
    # The destination failed, not the alerts (authentication refused): a retry that uses up no attempt.
    holds: bool = False


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def classify(status: int | None, error: TransportError | None = None, headers: Any = None, body: bytes = b"") -> Result:
    """Any 2xx delivered; 408, 429, 5xx, timeouts and connection errors retryable; 401 and 403 retryable
    without using up an attempt (see AUTH_STATUSES); other 4xx permanent."""
    if error is not None:
        return Result("retry", error.reason, excerpt=str(error)[:500])
    status = status or 0
    if 200 <= status < 300:
        return Result("delivered", "ok", status)
    excerpt = body[:500].decode("utf-8", "replace")
    retry_after = parse_retry_after(headers.get("Retry-After") if headers is not None else None)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Result("retry", http_reason(status), status, retry_after, excerpt)
    if status in AUTH_STATUSES:
        return Result("retry", http_reason(status), status, retry_after, excerpt, holds=True)
    return Result("permanent", http_reason(status), status, None, excerpt)


def exhausted(result: Result) -> Result:
    return Result("permanent", RETRIES_EXHAUSTED, result.status, None, f"{result.reason}: {result.excerpt}"[:500])


def plan_retries(
    items: Sequence[Item], result: Result, *, max_retries: int, base: float, cap: float, now: float
) -> tuple[list[tuple[float, bytes, bytes]], list[tuple[bytes, dict[str, Any], Result]]]:
    """(due epoch seconds, alert JSON, entry id) for each alert with an attempt left, and (entry id, alert,
    result) for each one that used up ``max_retries``. An attempt counts unless the destination refused our
    credential; a request that timed out may have been taken, so its retries are copies, marked ``resent``."""
    scheduled: list[tuple[float, bytes, bytes]] = []
    spent: list[tuple[bytes, dict[str, Any], Result]] = []
    used = 0 if result.holds else 1
    resent = {"resent": True} if result.reason == "timeout" else {}
    for entry_id, alert in items:
        attempts = int(alert.get("attempts", 0)) + used
        if attempts > max_retries:
            spent.append((entry_id, {**alert, "attempts": attempts}, exhausted(result)))
            continue
        delay = result.retry_after if result.retry_after is not None else backoff_delay(max(attempts, 1), base, cap)
        member = streams.dumps({**alert, "attempts": attempts, "last_error": result.reason, **resent})
        scheduled.append((now + min(delay, cap), member, entry_id))
    return scheduled, spent


def split_mappable(
    items: Sequence[Item], build: Callable[[Sequence[Mapping[str, Any]], SettingsView], Request], settings: SettingsView
) -> tuple[list[Item], list[tuple[bytes, dict[str, Any], Result]]]:
    """The items whose alerts ``build`` maps on their own, and the others with a ``malformed`` result."""
    good: list[Item] = []
    bad: list[tuple[bytes, dict[str, Any], Result]] = []
    for entry_id, alert in items:
        try:
            build([alert], settings)
            good.append((entry_id, alert))
        except PayloadError as exc:
            bad.append((entry_id, alert, Result("permanent", MALFORMED, excerpt=str(exc)[:500])))
    return good, bad


def dead_letter_fields(entry_id: bytes, alert: Mapping[str, Any], result: Result) -> dict[FieldT, EncodableT]:
    """A destination DLQ entry (``core.contracts.MoogDeadLetter``): reason, status, response excerpt, attempts,
    event id, source entry and the alert."""
    record: MoogDeadLetter = {
        "reason": result.reason,
        "status": "" if result.status is None else result.status,
        "response": result.excerpt,
        "attempts": int(alert.get("attempts", 0)),
        "event_id": alert.get("event_id", ""),
        "source_id": entry_id,
        "failed_at": datetime.now(UTC).isoformat(),
        "e": streams.dumps(alert),
    }
    return cast("dict[FieldT, EncodableT]", record)  # redis-py's xadd type takes no TypedDict
