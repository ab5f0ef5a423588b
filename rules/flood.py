"""Unmatched-event flood detection: many events no rule explains, from one host, in one window.

Messages are reduced to templates (numbers, addresses, ids replaced) so that "port 1 down" and
"port 2 down" count together. Counts live in Redis per fixed window (aligned to the epoch, so every
alerter agrees on the window), per host; crossing ``unhandled_threshold`` raises exactly one
meta-alert per host per window (the alerter adds it with a dedup on the host and window).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from mutt_project.redis import key

_TEMPLATE_RULES = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b", re.I), "<mac>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}\b", re.I), "<ip>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<id>"),
    (re.compile(r"\d+"), "<n>"),
]
MAX_TEMPLATE_LENGTH = 200
TOP_TEMPLATES = 5
# Namespace for meta-alert ids: the same host and window always give the same id (a natural dedup key).
_FLOOD_NAMESPACE = uuid.UUID("5b0c1f6e-7d1a-4c52-9a57-2f0d3c8e4b11")


def template_of(message: str) -> str:
    text = message[:1000]
    for pattern, replacement in _TEMPLATE_RULES:
        text = pattern.sub(replacement, text)
    return text[:MAX_TEMPLATE_LENGTH]


@dataclass(frozen=True)
class Flood:
    hostname: str
    window_start: int
    window_seconds: int
    count: int
    top_templates: list[tuple[str, int]]
    sample: str

    @property
    def alert_id(self) -> str:
        return str(uuid.uuid5(_FLOOD_NAMESPACE, f"{self.hostname}|{self.window_start}"))


def window_start(now: float, window_seconds: int) -> int:
    return int(now // window_seconds) * window_seconds


def record_unmatched(
    client: redis.Redis,
    unmatched: list[tuple[str, str]],
    *,
    threshold: int,
    window_seconds: int,
    now: float | None = None,
) -> list[Flood]:
    """Count unmatched (hostname, message) pairs; return the hosts at or over the threshold in this window."""
    if not unmatched:
        return []
    now = time.time() if now is None else now
    start = window_start(now, window_seconds)
    ttl = window_seconds * 2
    per_host: dict[str, Counter[str]] = {}
    samples: dict[str, str] = {}
    for hostname, message in unmatched:
        per_host.setdefault(hostname, Counter())[template_of(message)] += 1
        samples.setdefault(hostname, message[:500])

    pipe = client.pipeline(transaction=False)
    for hostname, templates in per_host.items():
        templates_key = key("flood", start, hostname, "templates")
        total_key = key("flood", start, hostname, "total")
        for template, count in templates.items():
            pipe.hincrby(templates_key, template, count)
        pipe.expire(templates_key, ttl)
        pipe.incrby(total_key, sum(templates.values()))
        pipe.expire(total_key, ttl)
    results = pipe.execute()

    floods = []
    index = 0
    for hostname, templates in per_host.items():
        index += len(templates) + 1  # the HINCRBYs and the EXPIRE
        total = int(results[index])
        index += 2  # the INCRBY and its EXPIRE
        if total < threshold:
            continue
        # Every batch over the threshold proposes the meta-alert; the caller adds it atomically with a
        # dedup on its id (host and window), so exactly one is sent per host and window, even when an
        # alerter dies between counting and sending.
        counts = {k.decode(): int(v) for k, v in client.hgetall(key("flood", start, hostname, "templates")).items()}
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TEMPLATES]
        floods.append(Flood(hostname, start, window_seconds, total, top, samples[hostname]))
    return floods


def meta_alert(flood: Flood, *, team: str, received_at: str) -> dict[str, Any]:
    """The alert payload of a flood (same shape as rule alerts, ``kind`` tells them apart)."""
    summary = "; ".join(f"{count} x {template}" for template, count in flood.top_templates)
    return {
        "kind": "flood",
        "event_id": flood.alert_id,
        "correlation_id": flood.alert_id,
        "hostname": flood.hostname,
        "rule_id": None,
        "team": team,
        "severity": "warning",
        "handling": "page_and_ticket",
        "environment": "",
        "description": (
            f"{flood.count} unmatched events from {flood.hostname} in {flood.window_seconds}s; top: {summary}"
        ),
        "event_time": received_at,
        "trap_oid": "",
        "source_type": "mutt",
        "signature": f"{flood.hostname}::unmatched-flood",
        "details": {
            "window_start": flood.window_start,
            "count": flood.count,
            "top_templates": [{"template": t, "count": c} for t, c in flood.top_templates],
            "sample": flood.sample,
        },
    }
