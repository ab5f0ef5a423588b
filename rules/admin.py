"""Operators' admin for rules, development hosts and device teams, and the rule tester."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from configcenter.runtime import get_setting
from ingest import schema
from mutt_project.admin_audit import AuditedAdmin, confirm_with_reason
from mutt_project.context import get_request_id
from rules import services
from rules.engine import (
    COST_SAMPLE_BYTES,
    SEVERITY_DEFAULT_TEXT,
    SEVERITY_FROM_SYSLOG,
    InvalidRule,
    alert_severity,
    clip_message,
    regex_cost_seconds,
    regex_program_size,
)
from rules.models import AlertRule, DevHost, DeviceTeam, EventAuditLog, SyslogSeverity
from rules.snapshot import build_ruleset

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
        }


@functools.lru_cache(maxsize=4096)
def _regex_cost(pattern: str) -> tuple[int, float]:
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


class _ServiceBound(AuditedAdmin):
    save_service = staticmethod(services.save)
    delete_service = staticmethod(services.delete)
    delete_many_service = staticmethod(services.delete_many)


@admin.register(AlertRule)
class AlertRuleAdmin(_ServiceBound):
    list_display = [
        "id",
        "name",
        "match_type",
        "criteria",
        "syslog_severity",
        "priority",
        "prod_handling",
        "dev_handling",
        "team_assignment",
        "severity",
        "is_active",
        "cost",
        "updated_at",
    ]
    list_display_links = ["id", "name"]
    list_filter = ["is_active", "match_type", "prod_handling", "dev_handling", "severity", "team_assignment"]
    search_fields = ["name", "description", "match_string", "trap_oid", "team_assignment"]
    ordering = ["priority", "id"]
    actions = ["activate", "deactivate"]
    fieldsets = [
        (None, {"fields": ["name", "description", "is_active", "priority"]}),
        ("What matches", {"fields": ["match_type", "match_string", "trap_oid", "syslog_severity"]}),
        ("What happens", {"fields": ["prod_handling", "dev_handling", "team_assignment", "severity"]}),
        ("Audit", {"fields": ["change_reason"]}),
    ]
    change_list_template = "admin/rules/alertrule/change_list.html"

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "match_string":
            kwargs["strip"] = False  # a space is part of a substring or an RE2 pattern ("^ ")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="criteria")
    def criteria(self, rule: AlertRule) -> str:
        return rule.trap_oid if rule.match_type == "oid_prefix" else rule.match_string

    @admin.display(description=f"cost (RE2 program size; µs per {COST_SAMPLE_BYTES // 1024} KiB)")
    def cost(self, rule: AlertRule) -> str:
        """A regex rule's measured cost; contains and OID rules cost the same whatever their text."""
        if rule.match_type != "regex":
            return "-"
        try:
            size, seconds = _regex_cost(rule.match_string)
        except Exception:  # a pattern saved around validation: say so, never break the list
            return "invalid pattern"
        return f"{size} instr; {seconds * 1e6:,.0f} µs"

    @admin.action(description="Activate selected rules (asks for a reason)")
    def activate(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._set_active(request, queryset, active=True)

    @admin.action(description="Deactivate selected rules (asks for a reason)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._set_active(request, queryset, active=False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet, *, active: bool) -> HttpResponse | None:
        verb = "activate" if active else "deactivate"
        return confirm_with_reason(
            self,
            request,
            queryset,
            action=verb,
            title=f"{verb.capitalize()} rules",
            perform=lambda actor, rules, reason: services.set_rules_active(
                actor=actor, rules=rules, active=active, reason=reason
            ),
            done=f"{verb.capitalize()}d {{count}} rule(s).",
        )

    def get_urls(self) -> list[URLPattern]:
        tester = path("tester/", self.admin_site.admin_view(self.tester_view), name="rules_alertrule_tester")
        return [tester, *super().get_urls()]

    def tester_view(self, request: HttpRequest) -> HttpResponse:
        """Run an example event through the same compiled engine the alerter uses."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RuleTesterForm(request.POST or None)
        result = None
        error = ""
        tested: dict[str, Any] = {}
        if request.method == "POST" and form.is_valid():
            event = form.cleaned_data["event"]
            # The alerter's own steps: the canonical event, cut to the bytes rules see, then the engine.
            limit = get_setting("rule_max_message_bytes")
            seen = clip_message(event["message"], limit)
            try:
                result = build_ruleset().match(
                    event["hostname"],
                    seen,
                    trap_oid=event["trap_oid"] or None,
                    syslog_severity=event["syslog_severity"],
                    all_matches=True,
                )
            except InvalidRule as exc:  # only possible if the database holds a rule saved around validation
                error = str(exc)
            if result is not None and result.rule is not None:
                tested["severity"] = alert_severity(result.rule.severity, event["syslog_severity"])
                tested["severity_source"] = _severity_source(result.rule.severity, event["syslog_severity"])
            tested["clipped_to"] = limit if seen != event["message"] else None
            tested["event_json"] = orjson.dumps(
                {k: event[k] for k in ("hostname", "message", "trap_oid", "syslog_severity")}
            ).decode()
        context = {
            **self.admin_site.each_context(request),
            "title": "Rule tester",
            "opts": self.model._meta,
            "form": form,
            "result": result,
            "error": error,
            "tested": tested,
            "severity_default": SEVERITY_DEFAULT_TEXT,
        }
        return TemplateResponse(request, "admin/rules/rule_tester.html", context)


@admin.register(DevHost)
class DevHostAdmin(_ServiceBound):
    list_display = ["hostname", "description", "updated_at"]
    search_fields = ["hostname", "description"]
    fields = ["hostname", "description", "change_reason"]


@admin.register(DeviceTeam)
class DeviceTeamAdmin(_ServiceBound):
    list_display = ["hostname", "team_name", "updated_at"]
    list_filter = ["team_name"]
    search_fields = ["hostname", "team_name"]
    fields = ["hostname", "team_name", "change_reason"]


@admin.register(EventAuditLog)
class EventAuditLogAdmin(admin.ModelAdmin):
    """The audit trail of every event: read-only, searchable by host, event id and correlation id."""

    list_display = [
        "event_time", "hostname", "environment", "handling", "rule_id", "team", "forwarded", "alert_severity",
        "short_message",
    ]  # fmt: skip
    list_filter = ["handling", "environment", "forwarded", "alert_severity", "source_type"]
    search_fields = ["=hostname", "=event_id", "=correlation_id", "=trap_oid"]
    date_hierarchy = "event_time"
    show_full_result_count = False  # counting a partitioned table of millions of rows on every page is slow
    list_per_page = 100

    @admin.display(description="message")
    def short_message(self, row: EventAuditLog) -> str:
        return row.message[:120]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retention removes rows by partition, never one by one
