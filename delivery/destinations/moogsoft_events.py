"""MUTT alerts → Moogsoft request bodies, in the two formats Moogsoft accepts (setting ``moog_format``).

``webhook``: Moogsoft Enterprise REST/Webhook LAM. Body ``{"events": [event, ...]}``; severities are
Moogsoft's integers (0 clear … 5 critical); authentication is HTTP Basic (delivery/destinations/moogsoft.py).

``events_api``: Moogsoft Cloud Events API. Body ``[event, ...]``; severities are Cloud's names (clear,
unknown, warning, minor, major, critical); authentication is the ``apiKey`` header.

The alert payload is what the alerter puts on the alert stream (``rules.alerter`` for rule alerts,
``rules.flood.meta_alert`` for floods; its shape is core.contracts.Alert). Every Moogsoft event carries its
MUTT event id (webhook ``external_id`` and ``custom_info.event_id``; Cloud tag ``event_id``), one per event and
the same for every copy of it, and the ingest request's correlation id (``custom_info.correlation_id``; Cloud
tag ``correlation_id``) so an operator can follow one event from ingest to Moogsoft. ``class`` is the team,
as in the earlier MUTT, or the source type (setting ``moog_class_from``); the rule's name, and a trap's
varbinds (webhook ``custom_info.details.varbinds``; Cloud tags ``varbind.<name>``) travel too. See
docs/adr/ADR-005-moogsoft-event-fields.md.
An alert sent again although an earlier copy may have reached Moogsoft (a forwarder died mid-request, or
a request timed out) carries ``resent``: webhook ``custom_info.resent`` true, Cloud tag ``resent``
"true"; its event id is the same as the first copy's.
Bodies never contain a secret: the credential's headers are the forwarder's to add, for the sender only.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypedDict

from core import streams
from core.contracts import FLOOD_ALERT, SEVERITIES
from core.varbinds import varbinds
from delivery.destinations import PayloadError, Request

MANAGER = "MUTT"
AGENT = "MUTT"
USER_AGENT = "MUTT/1 (+delivery)"
DEFAULT_CLASS = "network"
# What Moogsoft's ``class`` carries (setting moog_class_from): the team (the earlier MUTT) or the source type.
CLASS_FROM = ("team", "source_type")
MAX_VARBIND_TAGS = 20  # Cloud tags are flat text: the first varbinds of a trap, not a whole MIB walk
FLOOD_TYPE = "unmatched-flood"


class MoogFormat(StrEnum):
    WEBHOOK = "webhook"
    EVENTS_API = "events_api"


# Moogsoft's severity scale (Enterprise LAMs use the integer, Cloud the name): clear 0 … critical 5.
SEVERITY_LEVELS: dict[str, int] = {name: level for level, name in enumerate(SEVERITIES)}
CLOUD_SEVERITIES: dict[str, str] = {
    "clear": "clear",
    "indeterminate": "unknown",  # Cloud's name for "could not be determined"
    "warning": "warning",
    "minor": "minor",
    "major": "major",
    "critical": "critical",
}
# Like a LAM's moog_lookup_default: an unknown name is sent as indeterminate rather than dropped.
FALLBACK_SEVERITY = "indeterminate"


class CustomInfo(TypedDict):
    team: str
    handling: str
    environment: str
    rule_id: int | None
    rule_name: str
    trap_oid: str
    event_id: str
    correlation_id: str
    details: dict[str, Any]
    resent: bool  # an earlier copy may have reached Moogsoft (same event_id)


# "class" is a Python keyword, hence the functional TypedDict syntax.
WebhookEvent = TypedDict(
    "WebhookEvent",
    {
        "signature": str,
        "source_id": str,
        "external_id": str,
        "manager": str,
        "source": str,
        "class": str,
        "agent": str,
        "agent_location": str,
        "type": str,
        "severity": int,
        "description": str,
        "agent_time": int,
        "custom_info": CustomInfo,
    },
)

CloudEvent = TypedDict(
    "CloudEvent",
    {
        "source": str,
        "check": str,
        "severity": str,
        "description": str,
        "dedupe_key": str,
        "time": int,
        "class": str,
        "manager": str,
        "tags": dict[str, str],
    },
)


@dataclass(frozen=True, slots=True)
class MoogRequest(Request):
    """One Moogsoft request: its ``scheme`` is its format (which credential headers it needs)."""

    event_ids: tuple[str, ...] = ()

    @property
    def format(self) -> MoogFormat:
        return MoogFormat(self.scheme)

    @property
    def count(self) -> int:
        return len(self.event_ids)


# --- one alert ------------------------------------------------------------------------------------


@functools.cache
def agent_location() -> str:
    """Where this MUTT process runs (the pod or host name), for the webhook ``agent_location``."""
    return socket.gethostname()


def moog_severity(alert: Mapping[str, Any]) -> str:
    """The alert's severity name on Moogsoft's scale (unknown or empty names become indeterminate)."""
    name = str(alert.get("severity") or "").strip().lower()
    return name if name in SEVERITY_LEVELS else FALLBACK_SEVERITY


def event_type(alert: Mapping[str, Any]) -> str:
    """What raised the alert: ``rule-<id>``, or ``unmatched-flood`` for a flood meta-alert."""
    if alert.get("kind") == FLOOD_ALERT:
        return FLOOD_TYPE
    rule_id = alert.get("rule_id")
    return f"rule-{rule_id}" if rule_id is not None else "unmatched"


def epoch_seconds(value: str) -> int:
    """Whole seconds since the epoch of an ISO 8601 time (a time without offset is taken as UTC)."""
    moment = datetime.fromisoformat(value.strip().upper())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def to_webhook_event(
    alert: Mapping[str, Any], *, location: str | None = None, class_from: str = "team"
) -> WebhookEvent:
    """The REST/Webhook LAM event of ``alert``."""
    required = _required(alert)
    return {
        "signature": required["signature"],
        "source_id": required["hostname"],
        "external_id": required["event_id"],
        "manager": MANAGER,
        "source": required["hostname"],
        "class": _event_class(alert, class_from),
        "agent": AGENT,
        "agent_location": location if location is not None else agent_location(),
        "type": event_type(alert),
        "severity": SEVERITY_LEVELS[moog_severity(alert)],
        "description": _description(alert),
        "agent_time": required["time"],
        "custom_info": {
            "team": str(alert.get("team") or ""),
            "handling": str(alert.get("handling") or ""),
            "environment": str(alert.get("environment") or ""),
            "rule_id": alert.get("rule_id"),
            "rule_name": str(alert.get("rule_name") or ""),
            "trap_oid": str(alert.get("trap_oid") or ""),
            "event_id": required["event_id"],
            "correlation_id": _correlation_id(alert),
            "details": dict(alert.get("details") or {}),
            "resent": bool(alert.get("resent")),
        },
    }


def to_cloud_event(alert: Mapping[str, Any], *, class_from: str = "team") -> CloudEvent:
    """The Cloud Events API event of ``alert``."""
    required = _required(alert)
    tags = {
        "team": alert.get("team"),
        "environment": alert.get("environment"),
        "handling": alert.get("handling"),
        "rule_id": alert.get("rule_id"),
        "rule_name": alert.get("rule_name"),
        "event_id": required["event_id"],
        "correlation_id": _correlation_id(alert),
        "trap_oid": alert.get("trap_oid"),
        "resent": "true" if alert.get("resent") else None,
        **_varbind_tags(alert),
    }
    return {
        "source": required["hostname"],
        "check": event_type(alert),
        "severity": CLOUD_SEVERITIES[moog_severity(alert)],
        "description": _description(alert),
        "dedupe_key": required["signature"],
        "time": required["time"],
        "class": _event_class(alert, class_from),
        "manager": MANAGER,
        # Cloud tags are flat text pairs; empty ones (no rule, no OID) are left out rather than sent blank.
        "tags": {name: str(value) for name, value in tags.items() if value not in (None, "")},
    }


def to_event(alert: Mapping[str, Any], fmt: str, *, class_from: str = "team") -> WebhookEvent | CloudEvent:
    if parse_format(fmt) == MoogFormat.WEBHOOK:
        return to_webhook_event(alert, class_from=class_from)
    return to_cloud_event(alert, class_from=class_from)


# --- requests -------------------------------------------------------------------------------------


def parse_format(fmt: str) -> MoogFormat:
    try:
        return MoogFormat(fmt)
    except ValueError:
        choices = ", ".join(f.value for f in MoogFormat)
        raise ValueError(f"unknown Moogsoft format {fmt!r}; expected one of {choices}") from None


def build_request(alerts: Sequence[Mapping[str, Any]], fmt: str, *, class_from: str = "team") -> MoogRequest:
    """One request carrying every alert in ``alerts`` (the caller keeps it within ``moog_batch_size``);
    ``class_from``: what Moogsoft's ``class`` carries, ``team`` or ``source_type``.

    Raises PayloadError naming the event id of the first alert that cannot be mapped.
    """
    if not alerts:
        raise ValueError("a Moogsoft request needs at least one alert")
    moog_format = parse_format(fmt)
    if moog_format == MoogFormat.WEBHOOK:
        location = agent_location()
        body = _json(
            {"events": [to_webhook_event(alert, location=location, class_from=class_from) for alert in alerts]}
        )
    else:
        body = _json([to_cloud_event(alert, class_from=class_from) for alert in alerts])
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
    return MoogRequest(body, headers, moog_format, tuple(str(alert["event_id"]) for alert in alerts))


def _json(value: Any) -> bytes:
    """``value`` as JSON (``streams.dumps``: exact for an integer past 64 bits, which an event's varbinds may
    hold); what cannot be written is a PayloadError, a permanent failure of the alerts, never an exception
    escaping the forwarder's step."""
    try:
        return streams.dumps(value)
    except ValueError as exc:
        raise PayloadError("the alert cannot be written as JSON") from exc


def build_requests(
    alerts: Sequence[Mapping[str, Any]], fmt: str, *, batch_size: int | None = None
) -> list[MoogRequest]:
    """``alerts`` as requests of at most ``batch_size`` alerts (default: the ``moog_batch_size`` setting)."""
    if batch_size is None:
        from configcenter.runtime import get_setting

        batch_size = int(get_setting("moog_batch_size"))
    return [build_request(batch, fmt) for batch in batches(alerts, batch_size)]


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- helpers --------------------------------------------------------------------------------------


def _required(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The fields no Moogsoft event can do without, checked; PayloadError names the alert, not its content."""
    event_id = str(alert.get("event_id") or "")
    if not event_id:
        raise PayloadError("alert has no event_id")
    values: dict[str, Any] = {"event_id": event_id}
    for name in ("hostname", "signature", "event_time"):
        value = alert.get(name)
        if not isinstance(value, str) or not value.strip():
            raise PayloadError(f"alert {event_id} has no {name}")
        values[name] = value
    try:
        values["time"] = epoch_seconds(values.pop("event_time"))
    except ValueError:
        raise PayloadError(f"alert {event_id} has an event_time that is not ISO 8601") from None
    return values


def _correlation_id(alert: Mapping[str, Any]) -> str:
    # An alert without a correlation id (an old message) is still traceable by its event id.
    return str(alert.get("correlation_id") or alert.get("event_id") or "")


def _event_class(alert: Mapping[str, Any], class_from: str) -> str:
    """The team (the earlier MUTT's meaning, the default) or the source type, else ``network``."""
    value = alert.get("source_type") if class_from == "source_type" else alert.get("team")
    return str(value or DEFAULT_CLASS)


def _description(alert: Mapping[str, Any]) -> str:
    # The alerter never queues an empty description; an alert queued by an older version may have one.
    return str(alert.get("description") or alert.get("rule_name") or event_type(alert))


def _varbind_tags(alert: Mapping[str, Any]) -> dict[str, Any]:
    details = alert.get("details")
    found = varbinds(details.get("varbinds")) if isinstance(details, Mapping) else iter(())
    tags: dict[str, Any] = {}
    for name, value in found:
        if len(tags) == MAX_VARBIND_TAGS:
            break
        tags[f"varbind.{name}"] = value if isinstance(value, str | int | float) else _json(value).decode()
    return tags
