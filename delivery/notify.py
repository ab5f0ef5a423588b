"""Tell people that DLQ entries were given up on: one webhook call per remediation pass.

Where and how come from runtime settings: ``notify_webhook_url`` (empty: log only) and
``notify_webhook_format``:

- ``pagerduty``: a PagerDuty Events API v2 ``trigger``; the routing key is the ``NOTIFY_WEBHOOK_TOKEN``
  secret, and the dedup key names the dead queue, so repeated passes add to one open incident instead
  of paging again;
- ``json``: a plain JSON document, with the token (when set) as ``Authorization: Bearer``.

A failed notification is logged and counted and never raised: the entries are in the dead queue either
way, and the next poison entries will notify again. The token is never logged: error messages carry the
target's host only, and response excerpts are scrubbed of it.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3
from prometheus_client import Counter

from configcenter.runtime import get_setting
from core import contracts, streams
from core.secrets import get_secret

logger = logging.getLogger("mutt.remediation")

TOKEN_SECRET = "NOTIFY_WEBHOOK_TOKEN"  # noqa: S105  (the name of the secret, not a value)
COMPONENT = "mutt-remediation"
SAMPLE_SIZE = 10
TIMEOUT = urllib3.Timeout(connect=5.0, read=10.0)

SENT, FAILED, DISABLED, NO_TOKEN = "sent", "failed", "disabled", "no_token"
NOTIFICATIONS = Counter(
    "mutt_remediation_notifications_total", "Poison notifications by outcome (sent, failed, disabled, no_token).",
    ["outcome"],
)  # fmt: skip


@dataclass(frozen=True)
class PoisonReport:
    """Entries one pass moved to the dead queue: how many, from which queues, and some of their event ids."""

    count: int
    queues: dict[str, int]
    sample_event_ids: list[str] = field(default_factory=list)
    max_replays: int = 0

    def summary(self) -> str:
        per_queue = ", ".join(f"{queue}: {n}" for queue, n in sorted(self.queues.items()))
        noun = "entry" if self.count == 1 else "entries"
        return f"MUTT moved {self.count} DLQ {noun} to the dead queue after {self.max_replays} replays ({per_queue})"

    def details(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "queues": dict(sorted(self.queues.items())),
            "sample_event_ids": self.sample_event_ids[:SAMPLE_SIZE],
            "dead_queue": streams.dlq_stream(contracts.DEAD_QUEUE),
            "max_poison_retries": self.max_replays,
        }


def pagerduty_body(report: PoisonReport, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 trigger."""
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": streams.dlq_stream(contracts.DEAD_QUEUE),
        "payload": {
            "summary": report.summary()[:1024],  # PagerDuty's limit
            "source": socket.gethostname(),
            "severity": "error",
            "component": COMPONENT,
            "custom_details": report.details(),
        },
    }


def json_body(report: PoisonReport) -> dict[str, Any]:
    return {
        "event": "mutt.dlq.poison",
        "summary": report.summary(),
        "source": socket.gethostname(),
        "component": COMPONENT,
        "sent_at": datetime.now(UTC).isoformat(),
        **report.details(),
    }


def notify_poison(report: PoisonReport, *, http: urllib3.PoolManager | None = None) -> str:
    """Send the notification; returns the outcome (sent, failed, disabled, no_token). Never raises."""
    try:
        outcome = _send(report, http or urllib3.PoolManager(retries=False))
    except Exception as exc:  # a notification must never stop remediation
        logger.error("poison notification failed unexpectedly (%s)", type(exc).__name__)
        outcome = FAILED
    NOTIFICATIONS.labels(outcome).inc()
    return outcome


def _send(report: PoisonReport, http: urllib3.PoolManager) -> str:
    url = str(get_setting("notify_webhook_url")).strip()
    if not url:
        logger.warning("%s; no notify_webhook_url, so only this log line says so", report.summary())
        return DISABLED
    token = get_secret(TOKEN_SECRET) or ""
    headers = {"Content-Type": "application/json", "User-Agent": "MUTT/1 (+remediation)"}
    if get_setting("notify_webhook_format") == "pagerduty":
        if not token:
            logger.error("%s; not sent: PagerDuty needs the %s secret as routing key", report.summary(), TOKEN_SECRET)
            return NO_TOKEN
        body = pagerduty_body(report, token)
    else:
        body = json_body(report)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    target = _host(url)
    try:
        response = http.request(
            "POST", url, body=orjson.dumps(body), headers=headers, timeout=TIMEOUT, redirect=False, retries=False
        )
    except urllib3.exceptions.HTTPError as exc:
        # Only the class name and the host: urllib3's messages repeat the URL, which may hold a key.
        logger.error("poison notification to %s failed (%s)", target, type(exc).__name__)
        return FAILED
    if not 200 <= response.status < 300:
        excerpt = response.data[:300].decode("utf-8", "replace")
        if token:
            excerpt = excerpt.replace(token, "***")
        logger.error(
            "poison notification to %s refused with HTTP %s", target, response.status, extra={"response": excerpt}
        )
        return FAILED
    logger.info("poison notification sent to %s", target, extra={"count": report.count})
    return SENT


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        return "(unparseable URL)"
