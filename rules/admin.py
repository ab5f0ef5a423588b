"""Operators' admin for rules, development hosts and device teams, and the rule tester."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from core.admin_audit import AuditedAdmin, confirm_with_reason, page_context
from rules import services
from rules.cost import COST_SAMPLE_BYTES
from rules.engine import SEVERITY_DEFAULT_TEXT, InvalidRule
from rules.models import AlertRule, DevHost, DeviceTeam, EventAuditLog
from rules.snapshot import build_ruleset
from rules.tester import RuleTesterForm, evaluate_event, regex_cost


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
        ("Moogsoft", {"fields": ["signature_fields"]}),
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
            size, seconds = regex_cost(rule.match_string)
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
        alert: dict[str, Any] | None = None
        error = ""
        tested: dict[str, Any] = {}
        if request.method == "POST" and form.is_valid():
            try:
                result, tested = evaluate_event(build_ruleset(), form.cleaned_data["event"])
            except InvalidRule as exc:  # only possible if the database holds a rule saved around validation
                error = str(exc)
            alert = tested.get("alert")
        context = page_context(
            self,
            request,
            "Rule tester",
            form=form,
            result=result,
            alert=alert,
            error=error,
            tested=tested,
            severity_default=SEVERITY_DEFAULT_TEXT,
        )
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
