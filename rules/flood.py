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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from core.contracts import FLOOD_ALERT, PAGE_AND_TICKET, Alert
from core.redis import key

# (pattern, replacement, what the text must hold for the pattern to have any chance of matching).
# The precondition is a few C-speed character counts; it skips most patterns for most messages
# (a typical syslog line has no dots, few colons and no "0x") without changing any template.
_TEMPLATE_RULES: list[tuple[re.Pattern[str], str, Callable[[str], object]]] = [
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
        lambda text: text.count("-") >= 4,
    ),
    (
        re.compile(r"\b(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b", re.I),
        "<mac>",
        lambda text: text.count(":") + text.count("-") >= 5,
    ),
    (
        re.compile(r"\b[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\b", re.I),  # Cisco's dotted form
        "<mac>",
        lambda text: text.count(".") >= 2,
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>", lambda text: text.count(".") >= 3),
    (re.compile(r"\b(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}\b", re.I), "<ip>", lambda text: text.count(":") >= 2),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>", lambda text: "0x" in text or "0X" in text),
    # A plain search for twelve hex digits in a row costs less than half the substitution it spares.
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<id>", re.compile(r"[0-9a-fA-F]{12}").search),
    (re.compile(r"\d+"), "<n>", lambda text: True),
]
MAX_TEMPLATE_LENGTH = 200
TOP_TEMPLATES = 5
# Namespace for meta-alert ids: the same host and window always give the same id (a natural dedup key).
_FLOOD_NAMESPACE = uuid.UUID("5b0c1f6e-7d1a-4c52-9a57-2f0d3c8e4b11")


def template_of(message: str) -> str:
    text = message[:1000]
    for pattern, replacement, may_match in _TEMPLATE_RULES:
        if may_match(text):
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
        return _alert_id(self.hostname, self.window_start)


def _alert_id(hostname: str, start: int) -> str:
    return str(uuid.uuid5(_FLOOD_NAMESPACE, f"{hostname}|{start}"))


# The meta-alert ids of the current window's hosts (a uuid5 each), so a host costs one per window.
_ids_window: list[Any] = [None, {}]
_MAX_REMEMBERED_IDS = 50_000


def _window_alert_ids(start: int) -> dict[str, str]:
    if _ids_window[0] != start or len(_ids_window[1]) > _MAX_REMEMBERED_IDS:
        _ids_window[:] = [start, {}]
    ids: dict[str, str] = _ids_window[1]
    return ids


def window_start(now: float, window_seconds: int) -> int:
    return int(now // window_seconds) * window_seconds


# Count one batch's unmatched events and say which hosts need a meta-alert, in one round trip.
# KEYS: the flood dedup bucket of the window, then per host its templates hash and its total counter.
# ARGV: ttl, threshold, then per host: meta-alert id, number of templates, (template, count) pairs.
# Returns, per host at or over the threshold whose meta-alert is not in the dedup bucket yet:
# host index (1-based), total, then its whole templates hash flattened; once the meta-alert is added,
# later batches of that window only count.
RECORD_SCRIPT = """
local ttl, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
local a = 3
local host = 0
for k = 2, #KEYS, 2 do
  host = host + 1
  local alert_id = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  local total = 0
  a = a + 2
  for i = 1, n do
    local count = tonumber(ARGV[a + 1])
    redis.call('HINCRBY', KEYS[k], ARGV[a], count)
    total = total + count
    a = a + 2
  end
  local added = total
  total = redis.call('INCRBY', KEYS[k + 1], added)
  if total == added then
    -- the host's first events in this window: both keys were created just now
    redis.call('EXPIRE', KEYS[k], ttl)
    redis.call('EXPIRE', KEYS[k + 1], ttl)
  end
  if total >= threshold and redis.call('HEXISTS', KEYS[1], alert_id) == 0 then
    out[#out + 1] = {host, total, redis.call('HGETALL', KEYS[k])}
  end
end
return out
"""


def dedup_bucket(start: int) -> str:
    """The alerter's dedup hash for the meta-alerts of one window (field: the meta-alert id)."""
    return key("alerted", "flood", start)


def record_unmatched(
    client: redis.Redis,
    unmatched: list[tuple[str, str]],
    *,
    threshold: int,
    window_seconds: int,
    now: float | None = None,
) -> list[Flood]:
    """Count unmatched (hostname, message) pairs; return the floods whose meta-alert is still to be sent.

    A host at or over the threshold in this window is proposed by every batch until its meta-alert is
    in the window's dedup bucket; the alerter adds it there atomically with the alert itself. So an
    alerter that dies between counting and sending leaves the proposal to the next batch, and a host
    already alerted on costs nothing more than its counters.
    """
    templated = [(hostname, template_of(message), message) for hostname, message in unmatched]
    counting = Counting.of(templated, threshold=threshold, window_seconds=window_seconds, now=now)
    if counting is None:
        return []
    return counting.floods(client.register_script(RECORD_SCRIPT)(keys=counting.keys, args=counting.args))


@dataclass
class Counting:
    """One batch's unmatched events as the counting script's keys and arguments, so the caller may run
    the script now or send it and read its reply later."""

    start: int
    window_seconds: int
    hosts: list[str]
    samples: dict[str, str]
    keys: list[str]
    args: list[Any]

    @classmethod
    def of(
        cls, unmatched: list[tuple[str, str, str]], *, threshold: int, window_seconds: int, now: float | None = None
    ) -> Counting | None:
        """From (hostname, template, message) triples (see ``template_of``)."""
        if not unmatched:
            return None
        start = window_start(time.time() if now is None else now, window_seconds)
        per_host: dict[str, Counter[str]] = {}
        samples: dict[str, str] = {}
        for hostname, template, message in unmatched:
            per_host.setdefault(hostname, Counter())[template] += 1
            samples.setdefault(hostname, message[:500])
        hosts = list(per_host)
        keys = [dedup_bucket(start)]
        args: list[Any] = [window_seconds * 2, threshold]
        prefix = key("flood", start)
        ids = _window_alert_ids(start)
        for hostname in hosts:
            templates = per_host[hostname]
            keys += [f"{prefix}:{hostname}:templates", f"{prefix}:{hostname}:total"]
            alert_id = ids.get(hostname) or ids.setdefault(hostname, _alert_id(hostname, start))
            args += [alert_id, len(templates)]
            for template, count in templates.items():
                args += [template, count]
        return cls(start, window_seconds, hosts, samples, keys, args)

    def floods(self, reply: list[Any]) -> list[Flood]:
        """The floods the counting script's reply proposes."""
        floods = []
        for index, total, flat in reply:
            hostname = self.hosts[int(index) - 1]
            counts = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
            top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TEMPLATES]
            floods.append(Flood(hostname, self.start, self.window_seconds, int(total), top, self.samples[hostname]))
        return floods


def meta_alert(flood: Flood, *, team: str, received_at: str) -> Alert:
    """The alert payload of a flood (same shape as rule alerts, ``kind`` tells them apart)."""
    summary = "; ".join(f"{count} x {template}" for template, count in flood.top_templates)
    return {
        "kind": FLOOD_ALERT,
        "event_id": flood.alert_id,
        "correlation_id": flood.alert_id,
        "hostname": flood.hostname,
        "rule_id": None,
        "team": team,
        "severity": "warning",
        "handling": PAGE_AND_TICKET,
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
