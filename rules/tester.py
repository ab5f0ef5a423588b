"""The admin's rule tester: an example event made exactly as ingest makes it, matched exactly as the
alerter matches it (ADR-007), and the measured cost of a regex rule for the rule list."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson
from django import forms

from configcenter.runtime import get_setting
from core.context import get_request_id
from core.contracts import CanonicalEvent
from ingest import schema
from rules.alerts import rule_alert
from rules.cost import regex_cost_seconds
from rules.engine import (
    SEVERITY_FROM_SYSLOG,
    MatchResult,
    RuleSet,
    alert_severity,
    clip_message,
)
from rules.models import SyslogSeverity
from rules.regexsets import regex_program_size

MESSAGE_HELP = (
    "Used exactly as typed: leading and trailing spaces and line breaks are kept, and an empty box is an "
    "empty message (ingest accepts one). A browser sends each line break of this box as CR LF; the tester "
    "turns them into LF, what syslog and JSON senders send, unless 'Keep CR LF' is ticked. For any other "
    "exact message (a lone CR, a tab at the end) use Event JSON."
)
EVENT_JSON_HELP = (
    "Optional: one event exactly as a sender posts it to ingest, a JSON object such as "
    '{"hostname": "r1", "message": "link down\\n"}. When given, the fields above are ignored.'
)


class RuleTesterForm(forms.Form):
    """An example event; ``clean`` turns it into the canonical event with ingest's own normalisation,
    so the tester refuses exactly what ingest refuses and matches exactly what the alerter matches."""

    # strip=False everywhere: ingest decides what is trimmed (the host name and OID), never the form.
    hostname = forms.CharField(required=False, strip=False, max_length=1000)
    message = forms.CharField(
        required=False, strip=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), help_text=MESSAGE_HELP
    )
    keep_crlf = forms.BooleanField(required=False, label="Keep CR LF", help_text="Match the message's CR LF as sent.")
    trap_oid = forms.CharField(required=False, strip=False, max_length=1000, label="Trap OID")
    syslog_severity = forms.TypedChoiceField(
        required=False, choices=[("", "(none)"), *SyslogSeverity.choices], coerce=int, empty_value=None
    )
    variables = forms.JSONField(
        required=False, label="Varbinds", help_text='Trap varbinds as ingest takes them, e.g. {"ifIndex": 3}.'
    )
    event_json = forms.CharField(
        required=False,
        strip=False,
        label="Event JSON",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text=EVENT_JSON_HELP,
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        item = self._item(data)
        receipt = schema.Receipt(datetime.now(UTC), get_request_id() or "rule-tester", "rule tester")
        event, errors = schema.normalise(item, receipt)
        if event is not None:
            _, errors = schema.encode(event, item)
        if errors:
            from_json = bool(data.get("event_json"))
            for name, problem in errors.items():
                if name in self.fields and not from_json:
                    self.add_error(name, f"Ingest would refuse this: {problem}.")
                else:
                    self.add_error("event_json" if from_json else None, f"Ingest would refuse {name}: {problem}.")
            return data
        data["event"] = event
        return data

    def _item(self, data: dict[str, Any]) -> Any:
        """What a sender would post for this form: the Event JSON, or the fields."""
        if data.get("event_json"):
            try:
                return orjson.loads(data["event_json"])
            except orjson.JSONDecodeError as exc:
                raise forms.ValidationError({"event_json": f"Not valid JSON: {exc}"}) from None
        message = data.get("message") or ""
        if not data.get("keep_crlf"):
            message = message.replace("\r\n", "\n")
        return {
            "hostname": data.get("hostname") or "",
            "message": message,
            "trap_oid": data.get("trap_oid") or None,
            "syslog_severity": data.get("syslog_severity"),
            "variables": data.get("variables"),
        }


@functools.lru_cache(maxsize=4096)
def regex_cost(pattern: str) -> tuple[int, float]:
    """(RE2 program size, slowest search of an 8 KiB sample in seconds), measured once per process."""
    return regex_program_size(pattern), regex_cost_seconds(pattern)


def _severity_source(rule_severity: str, syslog_severity: int | None) -> str:
    """Why the alert gets its severity, in the tester's words."""
    if rule_severity:
        return "set by the rule"
    if syslog_severity in SEVERITY_FROM_SYSLOG:
        return f"the rule names none: from the event's syslog severity {syslog_severity}"
    which = "no syslog severity" if syslog_severity is None else f"syslog severity {syslog_severity}"
    return f"the rule names none and the event has {which}: the default"


def evaluate_event(ruleset: RuleSet, event: CanonicalEvent) -> tuple[MatchResult, dict[str, Any]]:
    """The engine's answer for a canonical event, with every match, and what the page shows beside it.

    The alerter's own steps: the message cut to the bytes rules see, then the compiled engine.
    """
    limit = get_setting("rule_max_message_bytes")
    seen = clip_message(event["message"], limit)
    syslog_severity = event["syslog_severity"]
    result = ruleset.match(
        event["hostname"], seen, trap_oid=event["trap_oid"] or None, syslog_severity=syslog_severity, all_matches=True
    )
    shown = {
        "hostname": event["hostname"],
        "message": event["message"],
        "trap_oid": event["trap_oid"],
        "syslog_severity": syslog_severity,
    }
    tested: dict[str, Any] = {
        "clipped_to": limit if seen != event["message"] else None,
        "event_json": orjson.dumps(shown).decode(),
    }
    if result.rule is not None:
        tested["severity"] = alert_severity(result.rule.severity, syslog_severity)
        tested["severity_source"] = _severity_source(result.rule.severity, syslog_severity)
        # The alert the alerter would queue (signature, description), built by the alerter's own function.
        tested["alert"] = rule_alert(
            event,
            result.rule,
            team=result.team,
            severity=tested["severity"],
            handling=result.handling,
            environment=result.environment,
        )
    return result, tested
