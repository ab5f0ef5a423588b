"""Admin for API keys: created through the service, the raw key shown once, revocation with a reason."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from configcenter import services, settings_service
from configcenter.models import ApiKey, DynamicSetting, Scope
from configcenter.registry import REGISTRY, InvalidSettingValue, UnknownSetting, get_definition
from core.admin_audit import HistoryAdmin, confirm_with_reason, page_context
from core.audit import REASON_MAX_LENGTH, Actor


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Admin: superusers only. Read and write: only with the model permissions such a key reaches.",
    )
    change_reason = forms.CharField(required=False, max_length=REASON_MAX_LENGTH, label="Reason for change")

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "scopes", "description"]

    user: Any = None  # the person adding the key, set per request by ApiKeyAdmin.get_form

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # Checked here for a clear form error, and again in services.create_api_key for every other path.
        if self.user is not None and "scopes" in data:
            for refusal in services.scope_refusals(self.user, data["scopes"]):
                self.add_error("scopes", refusal)
        if self.user is not None and (owner_refusal := services.owner_refusal(self.user, data.get("owner"))):
            self.add_error("owner", owner_refusal)
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(HistoryAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scopes", "owner", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "description"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked, never deleted, so their audit trail stays whole

    def get_urls(self) -> list[URLPattern]:
        status = path("secrets/", self.admin_site.admin_view(self.secrets_view), name="configcenter_secrets")
        return [status, *super().get_urls()]

    def secrets_view(self, request: HttpRequest) -> HttpResponse:
        """Secrets status for superusers: source and masked fingerprints, never a value."""
        from core.secrets import secret_status

        if not request.user.is_superuser:
            raise PermissionDenied
        context = page_context(self, request, "Secrets status", rows=secret_status())
        return TemplateResponse(request, "admin/configcenter/secrets.html", context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None:
            kwargs["fields"] = ["description", "change_reason"]  # a key's identity and scopes do not change
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

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
        # Kept on this request only, for response_add: a message would carry it in the messages cookie
        # (signed, not encrypted) or the session, and so to disk, proxies and the next page.
        request._mutt_new_api_key = raw_key  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """The new key's plaintext, shown once in this page, which no cache may keep."""
        raw_key = getattr(request, "_mutt_new_api_key", None)
        if raw_key is None:
            return super().response_add(request, obj, post_url_continue)
        context = page_context(self, request, f"API key {obj.name} created", api_key=obj, raw_key=raw_key)
        # admin_view's never_cache marks the page no-store, so no browser or proxy cache keeps the key.
        return TemplateResponse(request, "admin/configcenter/apikey_created.html", context)

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


class ComponentFilter(admin.SimpleListFilter):
    title = "component"
    parameter_name = "component"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(c, c) for c in sorted({d.component for d in REGISTRY.values()})]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        return queryset.filter(key__in=[k for k, d in REGISTRY.items() if d.component == self.value()])


class DynamicSettingForm(forms.ModelForm):
    """Edit a runtime setting as text, validated by its registry definition (type, bounds, relations)."""

    new_value = forms.CharField(
        required=False,
        label="Value",
        help_text="Leave empty and tick 'use default' to return to the default.",
    )
    use_default = forms.BooleanField(required=False, label="Use the default")
    change_reason = forms.CharField(required=True, max_length=REASON_MAX_LENGTH, label="Reason for change")

    class Meta:
        model = DynamicSetting
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        definition = REGISTRY.get(self.instance.key)
        if definition is not None:
            self.fields["new_value"].initial = definition.to_text(definition.effective(self.instance.value))
            self.fields["new_value"].help_text = (
                f"{definition.type.value}, {definition.describe_bounds() or 'any value'}; "
                f"default {definition.to_text(definition.default)}. {definition.description}"
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        setting_key = self.instance.key
        try:
            definition = get_definition(setting_key)
            if data.get("use_default"):
                data["parsed"] = None
                settings_service.check_relations(setting_key, definition.default)
            else:
                data["parsed"] = definition.parse(data.get("new_value", ""))
                settings_service.check_relations(setting_key, data["parsed"])
        except (InvalidSettingValue, UnknownSetting) as exc:
            raise forms.ValidationError({"new_value": str(exc)}) from None
        return data


@admin.register(DynamicSetting)
class DynamicSettingAdmin(HistoryAdmin):
    form = DynamicSettingForm
    list_display = ["key", "current", "default", "is_default", "component", "bounds", "updated_at"]
    list_filter = [ComponentFilter]
    search_fields = ["key"]
    readonly_fields = ["key", "description", "default"]
    fields = ["key", "description", "default", "new_value", "use_default", "change_reason"]
    history_list_display = ["value", *HistoryAdmin.history_list_display]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys come from the registry in code

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # "use the default" instead, so the history stays whole

    def _definition(self, obj: DynamicSetting) -> Any:
        return REGISTRY.get(obj.key)

    @admin.display(description="current value")
    def current(self, obj: DynamicSetting) -> str:
        definition = self._definition(obj)
        if definition is None:
            return "(no longer registered)"
        return definition.to_text(definition.effective(obj.value))

    @admin.display(description="default")
    def default(self, obj: DynamicSetting) -> str:
        definition = self._definition(obj)
        return definition.to_text(definition.default) if definition else ""

    @admin.display(description="default?", boolean=True)
    def is_default(self, obj: DynamicSetting) -> bool:
        return obj.value is None

    @admin.display(description="component")
    def component(self, obj: DynamicSetting) -> str:
        definition = self._definition(obj)
        return definition.component if definition else ""

    @admin.display(description="bounds")
    def bounds(self, obj: DynamicSetting) -> str:
        definition = self._definition(obj)
        return definition.describe_bounds() if definition else ""

    @admin.display(description="description")
    def description(self, obj: DynamicSetting) -> str:
        definition = self._definition(obj)
        return definition.description if definition else ""

    def save_model(self, request: HttpRequest, obj: DynamicSetting, form: forms.ModelForm, change: bool) -> None:
        actor = Actor.for_user(request.user)
        reason = form.cleaned_data["change_reason"]
        if form.cleaned_data["parsed"] is None:
            settings_service.unset_setting(obj.key, actor=actor, reason=reason)
        else:
            settings_service.set_setting(obj.key, form.cleaned_data["parsed"], actor=actor, reason=reason)
