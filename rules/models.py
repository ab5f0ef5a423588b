"""Alert rules, development hosts and device teams: the operator-managed configuration of matching.

``clean()`` is the single validator: service functions call ``full_clean()`` before every save, so the
admin, the API and the commands refuse the same invalid rules with the same messages.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from simple_history.models import HistoricalRecords

from configcenter.runtime import get_setting
from core import contracts
from core.audit import AuditedHistory
from core.choices import text_choices
from rules.engine import SEVERITY_DEFAULT_TEXT
from rules.hosts import GLOB_CHARS
from rules.regexsets import regex_error, regex_program_size
from rules.signature import parse_fields as parse_signature_fields

_OID = re.compile(r"^\d+(\.\d+)*$")
_HOSTNAME = re.compile(r"^[a-z0-9_.:\-*?]+$", re.IGNORECASE)
HOSTNAME_HELP = (
    "A host name, or a glob pattern: '*' stands for any run of characters, '?' for one character "
    "(e.g. '*.lab.example.net', 'lab-*'). Stored lower-case; letters, digits, '.', '-', '_', ':' (IPv6), "
    "'*' and '?' only. An exact name beats every pattern; among patterns matching a host the one with "
    "the most characters other than '*' and '?' wins, then the oldest entry."
)
MATCH_STRING_HELP = (
    "Substring (contains) or RE2 pattern (regex), used exactly as typed, spaces included. A regex rule "
    "is also tried on an empty message (a trap sent without text), so '^$' catches those; a contains "
    "rule never matches an empty message. Rules see only the first rule_max_message_bytes bytes of a "
    "message (a runtime setting)."
)


MatchType = text_choices("MatchType", contracts.MATCH_TYPE_LABELS, module=__name__)
Handling = text_choices("Handling", contracts.HANDLING_LABELS, module=__name__)
# Moogsoft's severity names, from least to most severe.
AlertSeverity = text_choices(
    "AlertSeverity", {severity: severity.capitalize() for severity in contracts.SEVERITIES}, module=__name__
)


class SyslogSeverity(models.IntegerChoices):
    EMERGENCY = 0, "0 Emergency"
    ALERT = 1, "1 Alert"
    CRITICAL = 2, "2 Critical"
    ERROR = 3, "3 Error"
    WARNING = 4, "4 Warning"
    NOTICE = 5, "5 Notice"
    INFORMATIONAL = 6, "6 Informational"
    DEBUG = 7, "7 Debug"


def normalise_oid(value: str) -> str:
    return value.strip().removeprefix(".")


def normalise_hostname(value: str) -> str:
    return value.strip().lower()


def validate_hostname(value: str) -> None:
    if not _HOSTNAME.match(value):
        raise ValidationError(f"{value!r} is not a valid hostname or pattern. {HOSTNAME_HELP}", code="invalid")
    if set(value) <= GLOB_CHARS:
        raise ValidationError(f"{value!r} would match every host; name at least one character.", code="invalid")


class HostnameField(models.CharField):
    """A host name or glob pattern, normalised (trimmed, lower-case) before validation so 'Router1 '
    equals 'router1'."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 255)
        kwargs.setdefault("help_text", HOSTNAME_HELP)
        super().__init__(*args, **kwargs)
        if validate_hostname not in self.validators:
            self.validators.append(validate_hostname)

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        return normalise_hostname(value) if isinstance(value, str) else value


class AlertRule(models.Model):
    """What an event means: which events match, and what to do with them in prod and in dev."""

    name = models.CharField(max_length=200, help_text="Short label shown to operators.")
    description = models.TextField(blank=True)
    match_type = models.CharField(max_length=20, choices=MatchType.choices, default=contracts.CONTAINS)
    match_string = models.CharField(max_length=1000, blank=True, help_text=MATCH_STRING_HELP)
    trap_oid = models.CharField(
        max_length=255,
        blank=True,
        help_text="Dotted numeric OID prefix (oid_prefix rules), e.g. 1.3.6.1.4.1.9",
    )
    syslog_severity = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        choices=SyslogSeverity.choices,
        validators=[MinValueValidator(0), MaxValueValidator(7)],
        help_text="Only match events with exactly this syslog severity (empty: any).",
    )
    priority = models.PositiveIntegerField(default=100, help_text="Lower wins; ties go to the older rule.")
    prod_handling = models.CharField(max_length=20, choices=Handling.choices, default=contracts.PAGE_AND_TICKET)
    dev_handling = models.CharField(max_length=20, choices=Handling.choices, default=contracts.TICKET_ONLY)
    team_assignment = models.CharField(
        max_length=100, blank=True, help_text="Team for the alert; empty uses the host's device team."
    )
    severity = models.CharField(
        max_length=20,
        choices=AlertSeverity.choices,
        blank=True,
        help_text=f"Moogsoft severity of the alert; empty: {SEVERITY_DEFAULT_TEXT}.",
    )
    signature_fields = models.CharField(
        max_length=500,
        blank=True,
        help_text=(
            "What makes two events one Moogsoft alert: comma-separated fields among hostname, rule, trap_oid, "
            "source_type, message, interface and var:<varbind name or OID>. Empty: hostname, rule, trap_oid, "
            "interface (the interface from an IF-MIB varbind or the message's 'Interface X'; left out when "
            "the event names none), so each interface of a device is its own alert."
        ),
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(bases=[AuditedHistory])

    class Meta:
        ordering = ["priority", "id"]
        indexes = [models.Index(fields=["is_active", "priority"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    def clean(self) -> None:
        # match_string is kept as typed: a space is part of a substring or an RE2 pattern ("^ ").
        self.trap_oid = normalise_oid(self.trap_oid)
        self.team_assignment = self.team_assignment.strip()
        errors: dict[str, str] = self._clean_signature_fields()
        if self.match_type in (contracts.CONTAINS, contracts.REGEX):
            if not self.match_string.strip():
                errors["match_string"] = f"A {self.match_type} rule needs a match string (not only spaces)."
            if self.trap_oid:
                errors["trap_oid"] = f"A {self.match_type} rule matches the message; leave trap_oid empty."
        if self.match_type == contracts.REGEX and self.match_string.strip():
            problem = regex_error(self.match_string)
            if problem:
                errors["match_string"] = f"Not a valid RE2 regular expression: {problem}."
            else:
                # Past RE2's DFA budget a search costs about program size x message bytes: bound both.
                size, limit = regex_program_size(self.match_string), get_setting("rule_regex_max_program_size")
                if size > limit:
                    errors["match_string"] = (
                        f"This RE2 pattern compiles to {size} instructions, more than the {limit} allowed "
                        "(runtime setting rule_regex_max_program_size); large counted repetitions such as "
                        "{500} cost the most."
                    )
        if self.match_type == contracts.OID_PREFIX:
            if not self.trap_oid:
                errors["trap_oid"] = "An oid_prefix rule needs a trap OID."
            elif not _OID.match(self.trap_oid):
                errors["trap_oid"] = f"{self.trap_oid!r} is not a dotted numeric OID such as 1.3.6.1.4.1.9."
            if self.match_string.strip():
                errors["match_string"] = "An oid_prefix rule matches the trap OID; leave match_string empty."
            self.match_string = ""
        if errors:
            raise ValidationError(errors)

    def _clean_signature_fields(self) -> dict[str, str]:
        """Normalise the signature fields (empty stays empty: the default); the error naming the field."""
        if not self.signature_fields.strip():
            self.signature_fields = ""
            return {}
        try:
            self.signature_fields = ", ".join(parse_signature_fields(self.signature_fields))
        except ValueError as exc:
            return {"signature_fields": f"{str(exc)[:1].upper()}{str(exc)[1:]}."}
        return {}


class DevHost(models.Model):
    """A host whose events use each rule's dev handling instead of its prod handling."""

    hostname = HostnameField(unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(bases=[AuditedHistory])

    class Meta:
        ordering = ["hostname"]
        verbose_name = "development host"
        constraints = [
            models.CheckConstraint(condition=models.Q(hostname=Lower("hostname")), name="devhost_hostname_lower")
        ]

    def __str__(self) -> str:
        return self.hostname


class DeviceTeam(models.Model):
    """The team that owns a host: used for meta-alerts and when a rule names no team."""

    hostname = HostnameField(unique=True)
    team_name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(bases=[AuditedHistory])

    class Meta:
        ordering = ["hostname"]
        constraints = [
            models.CheckConstraint(condition=models.Q(hostname=Lower("hostname")), name="deviceteam_hostname_lower")
        ]

    def __str__(self) -> str:
        return f"{self.hostname} → {self.team_name}"

    def clean(self) -> None:
        self.team_name = self.team_name.strip()
        if not self.team_name:
            raise ValidationError({"team_name": "A device team needs a team name."})


class RawEventField(models.JSONField):
    """The event as received, in a PostgreSQL ``json`` column (migration 0003): its text is kept verbatim.

    psycopg2 parses ``json`` values itself (Django only turns that off for ``jsonb``), so a value read
    back may already be a dict or a list.
    """

    def db_type(self, connection: Any) -> str:
        return "json"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(value, dict | list):
            return value
        return super().from_db_value(value, expression, connection)


class EventAuditLog(models.Model):
    """One row per event the alerters processed, matched or not: the audit trail of every event.

    The table is partitioned by month on ``event_time`` with a default partition (so no event is ever
    refused for its timestamp). It is created by hand-written SQL (migration 0002), hence unmanaged:
    PostgreSQL requires the partition key in every unique constraint, so the primary key is
    (event_time, id) and idempotency is UNIQUE (event_id, event_time), which is deterministic for a
    redelivered event because event_time comes from the event itself.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField()
    event_time = models.DateTimeField()
    received_at = models.DateTimeField()
    hostname = models.CharField(max_length=255)
    environment = models.CharField(max_length=8)
    rule_id = models.BigIntegerField(null=True, blank=True, help_text="The winning rule (rules may be deleted later).")
    handling = models.CharField(max_length=20)
    team = models.CharField(max_length=100, blank=True)
    forwarded = models.BooleanField(default=False, help_text="An alert was queued for Moogsoft.")
    alert_severity = models.CharField(max_length=20, blank=True)
    syslog_severity = models.SmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    trap_oid = models.CharField(max_length=255, blank=True)
    source_type = models.CharField(max_length=50, blank=True)
    correlation_id = models.CharField(max_length=128, blank=True)
    raw = RawEventField()
    dead_letter_reason = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Why the event went to the alerter DLQ unmatched (handling 'dead_lettered'); kept when a replay "
        "audits it later.",
    )

    class Meta:
        managed = False
        db_table = "rules_eventauditlog"
        ordering = ["-event_time"]
        verbose_name = "event audit log entry"
        verbose_name_plural = "event audit log"

    def __str__(self) -> str:
        return f"{self.event_id} {self.hostname} {self.handling}"
