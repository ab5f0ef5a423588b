"""Admin for API keys: created through the service, the raw key shown once, revocation with a reason."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from simple_history.admin import SimpleHistoryAdmin

from configcenter import services
from configcenter.models import ApiKey, Scope
from mutt_project.admin_audit import confirm_with_reason
from mutt_project.audit import Actor


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    change_reason = forms.CharField(required=False, max_length=500, label="Reason for change")

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "scopes", "description"]


@admin.register(ApiKey)
class ApiKeyAdmin(SimpleHistoryAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scopes", "owner", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "description"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    history_list_display = ["history_actor", "history_change_reason", "history_request_id"]
    actions = ["revoke"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked, never deleted, so their audit trail stays whole

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None:
            kwargs["fields"] = ["description", "change_reason"]  # a key's identity and scopes do not change
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        actor = Actor.for_user(request.user)
        reason = form.cleaned_data.get("change_reason", "")
        if change:
            services.update_api_key(actor=actor, api_key=obj, description=obj.description, reason=reason)
            return
        created, raw_key = services.create_api_key(
            actor=actor,
            name=obj.name,
            scopes=form.cleaned_data["scopes"],
            owner=obj.owner,
            description=obj.description,
            reason=reason,
        )
        obj.pk = created.pk
        self.message_user(
            request,
            f"Key for {created.name}: {raw_key} — copy it now, it is not shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys (asks for a reason)")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        def perform(actor: Actor, keys: list[ApiKey], reason: str) -> int:
            for api_key in keys:
                services.revoke_api_key(actor=actor, api_key=api_key, reason=reason)
            return len(keys)

        return confirm_with_reason(
            self,
            request,
            queryset,
            action="revoke",
            title="Revoke API keys",
            perform=perform,
            done="Revoked {count} key(s).",
        )
