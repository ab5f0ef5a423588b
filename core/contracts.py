"""The contracts between MUTT's stages: what crosses a Redis stream, and the names it crosses by.

ingest → ``stream:ingest`` (group ``alerters``) → alerter → ``stream:alerts`` (group ``forwarders``) →
forwarder → Moogsoft; what a stage cannot process goes to a dead-letter queue (``dlq:<queue>``). Producers
and consumers of each stream import its shapes and names from here, so the two sides cannot drift apart:

- the topology: stream, consumer group, DLQ and channel names, unprefixed (``core.redis.key`` adds the
  deployment prefix), and the one field of an entry;
- the vocabularies the payloads carry: match type, handling, environment, severity, what became of an
  event, alert kind, DLQ queues and reasons. Django's ``TextChoices`` are derived from them
  (``core.choices``), so the values stored in the database are these;
- the payloads: the canonical event ingest queues, the alert the alerter queues, and the records of the
  two dead-letter formats.

Standard library and typing only (no Django, no app, no Redis client), so any layer and any process can
import it. Payloads are ``TypedDict``s and vocabularies ``Literal`` types with ``Final`` constants: they
cost nothing per event, where a dataclass or an enum would (docs/adr/ADR-011-stream-contracts.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypedDict, get_args

# --- topology ------------------------------------------------------------------------------------

INGEST_STREAM: Final = "stream:ingest"  # canonical events, from ingest to the alerters
ALERTS_STREAM: Final = "stream:alerts"  # alerts, from the alerters to the forwarders
ALERTERS_GROUP: Final = "alerters"  # the consumer group of the ingest stream
FORWARDERS_GROUP: Final = "forwarders"  # the consumer group of the alert stream, and of every destination's
# An entry's one field: the event or alert as JSON (one XADD field, one parse per entry).
PAYLOAD_FIELD: Final = b"e"

RULES_CHANNEL: Final = "rules:updates"  # a rule, development host or device team changed (alerters rebuild)
CONFIG_CHANNEL: Final = "config:updates"  # a runtime setting changed (every process reloads)

DlqQueue = Literal["alerter", "moog", "dead"]
ALERTER_QUEUE: Final = "alerter"  # ingest entries the alerter could not process
MOOG_QUEUE: Final = "moog"  # alerts Moogsoft did not take
DEAD_QUEUE: Final = "dead"  # entries replayed too often, or buried by an operator: out of remediation's reach
DLQ_QUEUE_LABELS: Final[Mapping[DlqQueue, str]] = {
    ALERTER_QUEUE: "Alerter DLQ (ingest events)",
    MOOG_QUEUE: "Moogsoft DLQ (alerts)",
    DEAD_QUEUE: "Dead queue (poison entries)",
}
DLQ_QUEUES: Final[tuple[DlqQueue, ...]] = get_args(DlqQueue)
# Where a replay puts an entry back: where it came from. A dead entry replays to its origin's stream.
REPLAY_STREAMS: Final[Mapping[str, str]] = {ALERTER_QUEUE: INGEST_STREAM, MOOG_QUEUE: ALERTS_STREAM}


# The destination whose stream is the alert stream itself (Moogsoft, the first): its alerts stay where they
# were before destinations existed, so no key is renamed and no data moved (docs/adr/ADR-013-destinations.md).
DEFAULT_DESTINATION: Final = "moog"


def destination_stream(name: str) -> str:
    """The stream of the alerts for destination ``name``: ``stream:alerts`` for Moogsoft, ``stream:alerts:<name>``
    for any other. The alerter writes it and the destination's forwarders read it, each deriving it from the
    name alone, so neither imports the other."""
    return ALERTS_STREAM if name == DEFAULT_DESTINATION else f"{ALERTS_STREAM}:{name}"


def dlq_key(queue: str) -> str:
    """The stream of a dead-letter queue: ``dlq:alerter``, ``dlq:moog``, ``dlq:dead``."""
    return f"dlq:{queue}"


# --- vocabularies --------------------------------------------------------------------------------
# Each is a Literal type (what mypy checks) with a Final constant per value (what code compares with: a
# global name, no attribute lookup) and, where people choose among them, a label per value.

MatchType = Literal["contains", "regex", "oid_prefix"]
CONTAINS: Final = "contains"
REGEX: Final = "regex"
OID_PREFIX: Final = "oid_prefix"
MATCH_TYPE_LABELS: Final[Mapping[MatchType, str]] = {
    CONTAINS: "Message contains (case-insensitive)",
    REGEX: "Message matches regular expression (RE2 search)",
    OID_PREFIX: "Trap OID starts with",
}
MATCH_TYPES: Final[frozenset[str]] = frozenset(get_args(MatchType))

# What a rule says to do with an event it matched, in prod and in dev.
Handling = Literal["page_and_ticket", "page_only", "ticket_only", "ignore"]
PAGE_AND_TICKET: Final = "page_and_ticket"
PAGE_ONLY: Final = "page_only"
TICKET_ONLY: Final = "ticket_only"
IGNORE: Final = "ignore"
HANDLING_LABELS: Final[Mapping[Handling, str]] = {
    PAGE_AND_TICKET: "Page and ticket",
    PAGE_ONLY: "Page only",
    TICKET_ONLY: "Ticket only",
    IGNORE: "Ignore",
}
HANDLINGS: Final[frozenset[str]] = frozenset(get_args(Handling))
ALERTING: Final[frozenset[str]] = HANDLINGS - {IGNORE}  # the handlings that queue an alert for Moogsoft

# What became of an event, as the audit log's ``handling`` column records it: the winning rule's handling,
# no rule matched, or dead-lettered before any rule was tried (the audit row then holds the DLQ reason).
Outcome = Literal[Handling, "unhandled", "dead_lettered"]
UNHANDLED: Final = "unhandled"
DEAD_LETTERED: Final = "dead_lettered"

# Where an event comes from: a development host (its rules' dev handling applies) or not.
Environment = Literal["dev", "prod"]
DEV: Final = "dev"
PROD: Final = "prod"

# Moogsoft's severity names, from least to most severe (Enterprise sends the position, 0 … 5).
Severity = Literal["clear", "indeterminate", "warning", "minor", "major", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)

AlertKind = Literal["rule", "flood"]
RULE_ALERT: Final = "rule"  # an event matched a rule whose handling alerts
FLOOD_ALERT: Final = "flood"  # many unmatched events from one host in one window (a meta-alert)

# Why the alerter dead-lettered an ingest entry. Remediation replays shed, max_deliveries and database_error
# (transient); malformed and processing_error need a person.
MALFORMED: Final = "malformed"  # not an event (no JSON object, a required field missing); the forwarder's too
MAX_DELIVERIES: Final = "max_deliveries"  # delivered more than alerter_max_deliveries times
PROCESSING_ERROR: Final = "processing_error"  # evaluating it raised, or the database refused its audit row
SHED: Final = "shed"  # moved out unmatched while the alert backlog was over the shed threshold
DATABASE_ERROR: Final = "database_error"  # written by no release today; replayed should an old entry hold it
ALERTER_DLQ_REASONS: Final = (SHED, MALFORMED, MAX_DELIVERIES, PROCESSING_ERROR)  # those alerters write

# Why the forwarder dead-lettered an alert: malformed, retries used up, or Moogsoft refused it for good
# (http_reason: a status other than 2xx, 5xx, 401, 403, 408 and 429; http_401 and http_403 entries are from
# releases that dead-lettered those).
RETRIES_EXHAUSTED: Final = "retries_exhausted"


def http_reason(status: int) -> str:
    """The DLQ reason of an alert Moogsoft answered ``status`` for: ``http_400``."""
    return f"http_{status}"


# --- the canonical event (ingest → alerters) -----------------------------------------------------

DEFAULT_SOURCE_TYPE: Final = "webhook"
# What the alerter cannot do without: an entry missing one (or holding it empty) is malformed.
REQUIRED_EVENT_FIELDS: Final = ("event_id", "hostname", "received_at", "timestamp")


class CanonicalEvent(TypedDict):
    """The one shape every source (HTTP, syslog, SNMP traps) is turned into, as ingest queues it.

    Every key is always present, so consumers (the alerter, the audit log, Moogsoft mapping) never guess;
    optional facts are ``None``. Fields a source sends that are not canonical are kept under ``extra``.
    """

    event_id: str  # UUID v7 (time-ordered), stamped at ingest; the dedup key downstream
    hostname: str  # stripped, lower-case
    message: str  # "" for a trap sent without one
    timestamp: str  # ISO 8601, UTC, microseconds: when the event happened
    timestamp_inferred: bool  # true when the source sent no timestamp and received_at was used
    # True when the source's time was outside [received_at - max_event_age, received_at + max_clock_skew]
    # and received_at was used instead; the time the source sent is then in original_timestamp.
    timestamp_corrected: bool
    original_timestamp: str | None  # ISO 8601, UTC, microseconds; None unless timestamp_corrected
    syslog_severity: int | None  # 0 (emergency) … 7 (debug)
    facility: int | None  # 0 … 23
    trap_oid: str | None  # dotted numeric, no leading dot
    source_type: str  # DEFAULT_SOURCE_TYPE unless the source says otherwise ("syslog", "snmp_trap", …)
    source_ip: str | None
    variables: dict[str, Any] | list[Any] | None  # trap varbinds
    extra: dict[str, Any]  # every other field the source sent, unchanged
    received_at: str  # ISO 8601, UTC, microseconds: when MUTT received it
    correlation_id: str  # the request id of the ingest request (X-Request-ID)
    ingested_by: str  # name of the API key (or listener) that brought it in


# --- the alert (alerters → forwarders) -----------------------------------------------------------


class _AlertKeys(TypedDict):
    # The keys every alert has. Alert adds the others with total=False rather than NotRequired, which the
    # runtime (Python 3.11, annotations postponed) would count as required in __required_keys__.
    kind: AlertKind
    event_id: str  # the event's; a flood's is derived from its host and window
    correlation_id: str
    hostname: str
    rule_id: int | None  # None for a flood
    team: str
    severity: str  # a Severity
    handling: str  # one of ALERTING
    environment: str  # an Environment; "" for a flood
    description: str
    event_time: str  # ISO 8601
    trap_oid: str
    source_type: str
    signature: str


class Alert(_AlertKeys, total=False):
    """An alert as the alerter queues it: one per alerting event (``rules.alerts.rule_alert``), or one per
    flood (``rules.flood.meta_alert``). Values come from the database and the wire, so the vocabularies
    are named in the comments, not claimed as Literal types the producers could only assert by casting."""

    rule_name: str  # rule alerts
    details: dict[str, Any]  # a trap's varbinds (``varbinds``), or a flood's counts
    # Added by the forwarder when it queues the alert again for a retry, or by a replay (attempts 0):
    attempts: int  # delivery attempts used up
    last_error: str  # the reason of the last failed attempt
    resent: bool  # an earlier copy may have reached Moogsoft (same event_id)


# --- dead-letter records -------------------------------------------------------------------------
# XADD fields of a DLQ entry; Redis gives every value back as bytes. The payload is under PAYLOAD_FIELD
# ("e") as it was, so a replay puts back exactly what failed.


class AlerterDeadLetter(TypedDict):
    """An entry of the alerter DLQ: an ingest entry the alerter could not process."""

    reason: str  # one of ALERTER_DLQ_REASONS
    error: str  # what went wrong, at most 1,000 characters
    attempts: int
    source_id: bytes  # the entry's id in the ingest stream
    failed_at: str  # ISO 8601, UTC
    consumer: str  # the alerter that gave up on it
    e: bytes  # the ingest entry's payload, or a JSON rendering of its fields when it had none


class MoogDeadLetter(TypedDict):
    """An entry of the Moogsoft DLQ: an alert the forwarder could not deliver."""

    reason: str  # MALFORMED, RETRIES_EXHAUSTED or an http_reason
    status: int | Literal[""]  # Moogsoft's HTTP status; "" when it gave none (a timeout, a refused connection)
    response: str  # an excerpt of Moogsoft's answer, or of the error
    attempts: int
    event_id: str
    source_id: bytes  # the entry's id in the alert stream
    failed_at: str  # ISO 8601, UTC
    e: bytes  # the alert as JSON ({"raw": …} for an entry that was no alert)


class BuriedFields(TypedDict):
    """What an entry moved to the dead queue carries besides every field it had."""

    origin: DlqQueue  # the queue it came from, whose replay rules apply to it
    replays: int  # how often its event was replayed
    moved_at: str  # ISO 8601, UTC
