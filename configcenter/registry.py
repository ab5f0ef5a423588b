"""The registry of runtime settings: every knob an operator may turn without a restart.

Each key has a type, a default, bounds, a description and the component that reads it. Values are
validated here, whether they arrive as text (``muttctl``, the admin) or as JSON (the API). Later
components add their keys with :func:`register`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class SettingType(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    URL = "url"  # text that is empty (the default applies) or an http(s) URL with a host
    ENUM = "enum"
    DURATION = "duration"  # stored and returned as seconds (float)


class UnknownSetting(KeyError):
    """No setting of that name is registered."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"unknown setting {self.key!r}; `muttctl config list` shows the registered keys"


class InvalidSettingValue(ValueError):
    """A value that does not fit the key's type, bounds or choices; the message names both."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# A whole number longer than this is outside every bound; int() of a 4,301-digit text raises ValueError.
_MAX_INT_DIGITS = 30
# Every text setting is bounded (the registry's max_length, or these defaults) before it is stored.
_DEFAULT_MAX_LENGTH = {"str": 200, "url": 2048}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class SettingDef:
    key: str
    type: SettingType
    default: Any
    description: str
    component: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    max_length: int | None = None  # text and URL settings: None takes _DEFAULT_MAX_LENGTH

    def parse(self, raw: Any) -> Any:
        """The typed value for ``raw`` (text or JSON), or InvalidSettingValue naming key and bound."""
        parser: Callable[[Any], Any] = getattr(self, f"_parse_{self.type.value}")
        value = parser(raw)
        self._check_bounds(value)
        return value

    def describe_bounds(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type in (SettingType.STR, SettingType.URL):
            kind = "an http(s) URL or empty, " if self.type == SettingType.URL else ""
            return f"{kind}at most {self.max_length or _DEFAULT_MAX_LENGTH[self.type.value]} characters"
        low = "" if self.minimum is None else self._fmt(self.minimum)
        high = "" if self.maximum is None else self._fmt(self.maximum)
        if low and high:
            return f"{low} … {high}"
        return f"≥ {low}" if low else (f"≤ {high}" if high else "")

    def effective(self, stored: Any) -> Any:
        """The value in force when ``stored`` is the stored one: the default while none is (null)."""
        return self.default if stored is None else stored

    def to_text(self, value: Any) -> str:
        if self.type == SettingType.BOOL:
            return "true" if value else "false"
        if self.type == SettingType.DURATION:
            return f"{self._fmt(value)}s"
        return str(value)

    # --- parsers ------------------------------------------------------------------------------

    def _parse_int(self, raw: Any) -> int:
        if isinstance(raw, bool):
            raise InvalidSettingValue(self.key, "expected a whole number, got a boolean")
        if isinstance(raw, int):
            if abs(raw) > 10**_MAX_INT_DIGITS:  # from JSON; its text would fill the error message
                raise InvalidSettingValue(
                    self.key, f"a {len(str(abs(raw)))}-digit number is outside {self.describe_bounds()}"
                )
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str) and re.fullmatch(r"\s*[-+]?\d[\d_]*\s*", raw):
            digits = raw.strip().lstrip("+-").replace("_", "").lstrip("0")
            if len(digits) > _MAX_INT_DIGITS:
                bounds = self.describe_bounds() or "a whole number"
                raise InvalidSettingValue(self.key, f"a {len(digits)}-digit number is outside {bounds}")
            return int(raw.replace("_", ""))
        raise InvalidSettingValue(self.key, f"expected a whole number, got {_shorten(raw)}")

    def _parse_float(self, raw: Any) -> float:
        if isinstance(raw, bool):
            raise InvalidSettingValue(self.key, "expected a number, got a boolean")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidSettingValue(self.key, f"expected a number, got {_shorten(raw)}") from None
        except OverflowError:  # an int from JSON too large for a float
            value = math.inf
        if not math.isfinite(value):
            raise InvalidSettingValue(self.key, "expected a finite number")
        return value

    def _parse_bool(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidSettingValue(self.key, f"expected true or false, got {_shorten(raw)}")

    def _parse_str(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise InvalidSettingValue(self.key, f"expected text, got {type(raw).__name__}")
        text = raw.strip()
        limit = self.max_length or _DEFAULT_MAX_LENGTH[self.type.value]
        if len(text) > limit:
            raise InvalidSettingValue(self.key, f"{len(text)} characters is above the maximum of {limit}")
        # NUL cannot be stored (PostgreSQL's jsonb refuses it) and no setting needs a control character.
        if any(unicodedata.category(ch) == "Cc" for ch in text):
            raise InvalidSettingValue(self.key, "control characters (NUL, CR, LF, tab, ...) are not allowed")
        return text

    def _parse_url(self, raw: Any) -> str:
        text = self._parse_str(raw)
        if not text:
            return text  # empty: the documented default (the local mock, or no notifications)
        # An operator's URL is fetched by our workers: file:, javascript: or a host-less URL is a mistake
        # or an attack (reading local files, SSRF tricks), never a destination.
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError as exc:
            raise InvalidSettingValue(self.key, f"not a valid URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise InvalidSettingValue(self.key, f"expected an http:// or https:// URL, got scheme {parts.scheme!r}")
        if not parts.hostname or " " in text:
            raise InvalidSettingValue(
                self.key, "expected an http(s) URL with a host, such as https://moog.example.net/"
            )
        if "@" in parts.netloc:
            # Settings are shown to every read-scope key and session; credentials belong in the secrets
            # store, which shows only fingerprints. The message never repeats the value.
            raise InvalidSettingValue(
                self.key,
                "a user name or password in the URL would be shown to every reader of the settings: remove it "
                "and store the credential as a secret (MOOG_API_KEY, NOTIFY_WEBHOOK_TOKEN; see docs/secrets.md)",
            )
        return text

    def _parse_enum(self, raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in self.choices:
            raise InvalidSettingValue(self.key, f"expected one of {', '.join(self.choices)}, got {_shorten(raw)}")
        return text

    def _parse_duration(self, raw: Any) -> float:
        if isinstance(raw, bool):
            raise InvalidSettingValue(self.key, "expected a duration, got a boolean")
        if isinstance(raw, int) and abs(raw) > 10**_MAX_INT_DIGITS:
            value = math.inf  # float() of such an int overflows; it is beyond every bound anyway
        elif isinstance(raw, int | float):
            value = float(raw)
        else:
            match = _DURATION.match(str(raw))
            if not match:
                raise InvalidSettingValue(
                    self.key, f"expected a duration such as 30, 30s, 250ms, 5m or 1h, got {_shorten(raw)}"
                )
            value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if not math.isfinite(value):
            raise InvalidSettingValue(self.key, "expected a finite duration")
        return value

    def _check_bounds(self, value: Any) -> None:
        if self.type not in (SettingType.INT, SettingType.FLOAT, SettingType.DURATION):
            return
        suffix = "s" if self.type == SettingType.DURATION else (f" {self.unit}" if self.unit else "")
        if self.minimum is not None and value < self.minimum:
            raise InvalidSettingValue(
                self.key,
                f"{self._fmt(value)}{suffix} is below the minimum of {self._fmt(self.minimum)}{suffix}",
            )
        if self.maximum is not None and value > self.maximum:
            raise InvalidSettingValue(
                self.key,
                f"{self._fmt(value)}{suffix} is above the maximum of {self._fmt(self.maximum)}{suffix}",
            )

    @staticmethod
    def _fmt(number: float) -> str:
        return f"{number:g}" if isinstance(number, float) else str(number)


def _shorten(raw: Any) -> str:
    """``raw`` for an error message, cut so a hostile megabyte is not echoed back."""
    text = repr(raw)
    return text if len(text) <= 80 else f"{text[:77]}..."


@dataclass(frozen=True)
class Relation:
    """A rule between two keys' effective values, checked whenever either changes."""

    lower: str
    upper: str
    strict: bool = False
    why: str = ""

    def holds(self, low: Any, high: Any) -> bool:
        return low < high if self.strict else low <= high


REGISTRY: dict[str, SettingDef] = {}
RELATIONS: list[Relation] = []


def register(
    key: str,
    type: SettingType,
    default: Any,
    description: str,
    component: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    unit: str = "",
    max_length: int | None = None,
) -> SettingDef:
    if key in REGISTRY:
        raise ValueError(f"setting {key!r} is registered twice")
    definition = SettingDef(key, type, default, description, component, minimum, maximum, choices, unit, max_length)
    definition.parse(default)  # a default outside its own bounds is a programming error: fail at import
    REGISTRY[key] = definition
    return definition


def get_definition(key: str) -> SettingDef:
    try:
        return REGISTRY[key]
    except KeyError:
        raise UnknownSetting(key) from None


def relations_for(key: str) -> list[Relation]:
    return [r for r in RELATIONS if key in (r.lower, r.upper)]


INT, ENUM, DUR = SettingType.INT, SettingType.ENUM, SettingType.DURATION

# fmt: off
for _key, _type, _default, _min, _max, _component, _unit, _description in [
    ("cache_reload_interval", DUR, 60.0, 1, 3600, "alerter", "",
     "How often each alerter rebuilds its rule snapshot even without a change notice (safety net)."),
    ("ingest_max_rate", INT, 100_000, 1, 10_000_000, "ingest", "events/s",
     "Global ingest rate across all web pods; above it requests get 429."),
    ("ingest_key_max_rate", INT, 50_000, 1, 10_000_000, "ingest", "events/s",
     "Ingest rate allowed per API key; above it that key's requests get 429."),
    ("ingest_max_queue_depth", INT, 1_000_000, 1_000, 100_000_000, "ingest", "events",
     "Unacknowledged events in the ingest stream at which ingest answers 503 (backpressure)."),
    ("ingest_max_batch", INT, 5_000, 1, 100_000, "ingest", "events",
     "Most events accepted in one ingest request; larger requests get 413."),
    ("ingest_max_event_bytes", INT, 65_536, 256, 10_485_760, "ingest", "bytes",
     "Largest single event accepted; larger items are refused with 413."),
    ("ingest_max_body_bytes", INT, 16_777_216, 1_024, 1_073_741_824, "ingest", "bytes",
     "Largest ingest request body, read into memory; the limit is the smaller of this and "
     "ingest_max_event_bytes * ingest_max_batch. Larger bodies get 413."),
    ("max_event_age", DUR, 604_800.0, 60, 31_536_000, "ingest", "",
     "Oldest event time accepted as sent; an older event is kept with its time set to when MUTT received "
     "it (timestamp_corrected, original_timestamp). Keep it below event_retention_days."),
    ("max_clock_skew", DUR, 300.0, 1, 604_800, "ingest", "",
     "How far in the future an event time may be; a later one is kept with its time set to when MUTT "
     "received it (timestamp_corrected, original_timestamp), so it cannot land in a month's partition early."),
    ("alerter_batch_size", INT, 500, 1, 5_000, "alerter", "events",
     "Events an alerter reads per XREADGROUP call."),
    ("alerter_queue_warn_threshold", INT, 100_000, 1, 100_000_000, "alerter", "alerts",
     "Alert-stream backlog above which alerters log and count a warning."),
    ("alerter_queue_shed_threshold", INT, 500_000, 1, 100_000_000, "alerter", "alerts",
     "Alert-stream backlog above which alerters shed load (see alerter_shed_mode)."),
    ("unhandled_threshold", INT, 100, 1, 1_000_000, "alerter", "events",
     "Unmatched events from one host within the window that raise a flood meta-alert."),
    ("unhandled_window_seconds", DUR, 300.0, 10, 86_400, "alerter", "",
     "Window over which unmatched events per host are counted."),
    ("moog_rate_limit", INT, 50, 1, 100_000, "forwarder", "requests",
     "Requests to Moogsoft allowed per moog_rate_period, shared by all forwarders."),
    ("moog_rate_period", DUR, 1.0, 0.1, 3600, "forwarder", "", "Period of the Moogsoft rate limit."),
    ("moog_timeout", DUR, 10.0, 0.1, 300, "forwarder", "", "Timeout of one request to Moogsoft."),
    ("moog_max_retries", INT, 10, 0, 100, "forwarder", "retries",
     "Retries of a retryable failure before the alert goes to the Moogsoft DLQ."),
    ("moog_retry_base_delay", DUR, 1.0, 0.01, 600, "forwarder", "",
     "First retry delay; later retries back off exponentially with full jitter."),
    ("moog_retry_max_delay", DUR, 300.0, 1, 86_400, "forwarder", "", "Longest delay between two retries."),
    ("circuit_breaker_threshold", INT, 5, 1, 1_000, "forwarder", "failures",
     "Consecutive Moogsoft failures that open the circuit breaker."),
    ("circuit_breaker_timeout", DUR, 30.0, 1, 3600, "forwarder", "",
     "How long the breaker stays open before one probe is let through."),
    ("remediation_interval", DUR, 60.0, 1, 86_400, "remediation", "", "How often the DLQs are examined for replay."),
    ("remediation_batch_size", INT, 100, 1, 10_000, "remediation", "entries", "Most DLQ entries replayed per pass."),
    ("max_poison_retries", INT, 5, 1, 100, "remediation", "replays",
     "Replays after which an entry moves to the dead queue and a notification is sent."),
    ("event_retention_days", INT, 90, 1, 3650, "retention", "days", "Days the event audit log is kept."),
    ("config_audit_retention_days", INT, 365, 30, 3650, "retention", "days",
     "Days configuration history (rules, settings, keys) is kept."),
    ("dlq_retention_days", INT, 30, 1, 3650, "retention", "days",
     "Days entries of the DLQ streams and the dead queue are kept; older ones are removed (counts per reason kept)."),
    ("partition_months_ahead", INT, 2, 1, 24, "retention", "months",
     "Months ahead of the current one whose event audit log partitions are created in advance."),
    ("archive_retention_days", INT, 2557, 1, 36_500, "retention", "days",
     "Days an archive of the event audit log is kept (default 7 years); older archive files are deleted, "
     "recorded like any deletion."),
]:
    register(_key, _type, _default, _description, _component, minimum=_min, maximum=_max, unit=_unit)

for _key, _type, _default, _min, _max, _unit, _description in [
    ("alerter_claim_idle_seconds", DUR, 30.0, 1, 3600, "",
     "How long an entry may stay unacknowledged before another alerter takes it over (crashed worker)."),
    ("alerter_max_deliveries", INT, 5, 1, 100, "deliveries",
     "Deliveries after which an ingest entry is treated as poison and moved to the alerter DLQ."),
    # Below the Redis client's socket timeout (10 s), so an idle read never times out.
    ("alerter_block_ms", INT, 1000, 10, 5_000, "ms", "How long an idle alerter waits for new events per read."),
    # Rules (alerter and rule tester alike): what one event may cost to match (ADR-007).
    ("rule_max_message_bytes", INT, 8_192, 256, 1_048_576, "bytes",
     "Bytes of a message that rules see (UTF-8, cut at a character boundary); the audit log and the "
     "alert keep the whole message."),
    ("rule_regex_max_program_size", INT, 1_000, 50, 100_000, "instructions",
     "Largest RE2 program a regex rule may compile to; checked when a rule is saved."),
]:
    register(_key, _type, _default, _description, "alerter", minimum=_min, maximum=_max, unit=_unit)

register("moog_url", SettingType.URL, "",
         "Moogsoft endpoint alerts are posted to (REST/Webhook LAM URL or Events API URL). Empty: the local "
         "mock_moog that `mutt up` starts.", "forwarder")
register("moog_health_url", SettingType.URL, "",
         "URL probed before replaying the Moogsoft DLQ (never a fake event). Empty: the mock's /health.",
         "remediation")
register("moog_format", ENUM, "webhook",
         "Payload format: 'webhook' (Enterprise REST/Webhook LAM events) or 'events_api' (Cloud Events API).",
         "forwarder", choices=("webhook", "events_api"))
register("moog_class_from", ENUM, "team", "What Moogsoft's 'class' carries: 'team' (the alert's team, as in the "
         "earlier MUTT) or 'source_type' (syslog, snmp_trap, ...). See ADR-005.", "forwarder",
         choices=("team", "source_type"))
register("forwarder_claim_idle_seconds", DUR, 60.0, "The takeover delay: how long an alert may stay "
         "unacknowledged before another forwarder takes it over (crashed worker) and sends it, marked resent "
         "when the crash came mid-request. Longer than moog_timeout.", "forwarder", minimum=1, maximum=3600)
register("consumer_forget_idle_seconds", DUR, 600.0, "How long a consumer (an alerter or a forwarder lane) with "
         "nothing pending may stay unseen before it is removed from its group (left by a killed worker).", "alerter",
         minimum=1, maximum=7 * 86_400)
register("moog_batch_size", INT, 50, "Alerts per request where the format allows batching.", "forwarder",
         minimum=1, maximum=1000, unit="alerts")
register("forwarder_concurrency", INT, 3, "Requests to Moogsoft each forwarder process keeps in flight (one "
         "consumer per request, sharing the breaker and rate limit).", "forwarder", minimum=1, maximum=32,
         unit="requests")
register("notify_webhook_url", SettingType.URL, "",
         "Where remediation reports poison entries (PagerDuty Events v2 or a plain JSON webhook). Empty: log only.",
         "remediation")
register("notify_webhook_format", ENUM, "pagerduty",
         "Notification format: 'pagerduty' (Events API v2) or 'json'.", "remediation", choices=("pagerduty", "json"))
register("unhandled_default_team", SettingType.STR, "network-ops",
         "Team of a flood meta-alert when the host has no device team.", "alerter")
register("partition_interval", ENUM, "month", "Range of each new event audit log partition: 'month', or 'day' for "
         "sites with hundreds of millions of events a day. Applies to partitions not yet created.", "retention",
         choices=("month", "day"))
register("retention_legal_hold", SettingType.BOOL, False, "Legal hold: while on, retention deletes nothing (no "
         "partition dropped, no DLQ entry, history row or archive file removed); archiving and planning still run.",
         "retention")
register("alerter_shed_mode", ENUM, "defer", "What alerters do above the shed threshold: 'dlq' moves the oldest "
         "ingest entries to the alerter DLQ (reason shed); 'defer' pauses consumption.", "alerter",
         choices=("dlq", "defer"))

RELATIONS.extend([
    Relation("alerter_queue_warn_threshold", "alerter_queue_shed_threshold", strict=True,
             why="the warning must come before shedding"),
    Relation("moog_retry_base_delay", "moog_retry_max_delay", why="the first delay cannot exceed the longest"),
    Relation("moog_timeout", "forwarder_claim_idle_seconds", strict=True,
             why="a request still waiting for Moogsoft must not be taken over and sent again"),
    Relation("ingest_max_batch", "ingest_max_queue_depth", why="a batch larger than the queue could never be accepted"),
])
# fmt: on
