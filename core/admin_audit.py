"""Admin plumbing for audited models: every save, delete and bulk action goes through a service.

``AuditedAdmin`` adds a "reason for change" field to the edit form and the delete page, routes writes
to the app's service functions with the logged-in user as actor, replaces Django's bulk delete with
one that asks for a reason and writes one history row per object. ``HistoryAdmin``, its base and
that of every admin with a history page, shows the actor, reason and request id beside
django-simple-history's field-level diffs, read through :mod:`core.history` in constant queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from simple_history.admin import SimpleHistoryAdmin

from core.audit import REASON_MAX_LENGTH, Actor, clip_reason
from core.history import trail, with_previous

REASON_FIELD = "change_reason"


class ReasonForm(forms.ModelForm):
    change_reason = forms.CharField(
        required=False,
        max_length=REASON_MAX_LENGTH,
        label="Reason for change",
        help_text="Recorded in the history with your name.",
    )


class ActionReasonForm(forms.Form):
    reason = forms.CharField(required=True, max_length=REASON_MAX_LENGTH, label="Reason")


def submitted_reason(request: HttpRequest) -> tuple[ActionReasonForm, str | None]:
    """The reason form of an action's confirmation page, and the reason once the page was submitted
    with a valid one (None while the page is first shown or its reason is missing)."""
    form = ActionReasonForm(request.POST if "apply" in request.POST else None)
    return form, form.cleaned_data["reason"] if form.is_bound and form.is_valid() else None


def page_context(modeladmin: admin.ModelAdmin, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    """What an admin page of ``modeladmin``'s own (a tester, a confirmation) renders with."""
    return {**modeladmin.admin_site.each_context(request), "title": title, "opts": modeladmin.model._meta, **extra}


def confirm_with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    perform: Callable[[Actor, list[Any], str], int],
    done: str,
) -> HttpResponse | None:
    """Show an intermediate page asking for a reason, then run ``perform`` on the selected objects."""
    form, reason = submitted_reason(request)
    if reason is not None:
        count = perform(Actor.for_user(request.user), list(queryset), reason)
        modeladmin.message_user(request, done.format(count=count), messages.SUCCESS)
        return None
    context = page_context(
        modeladmin,
        request,
        title,
        objects=queryset,
        form=form,
        action=action,
        hidden_selection=[(helpers.ACTION_CHECKBOX_NAME, obj.pk) for obj in queryset],
        cancel_url="",
    )
    return TemplateResponse(request, "admin/mutt/confirm_action.html", context)


class HistoryAdmin(SimpleHistoryAdmin):
    """A history page listing who changed what, why and in which request, in constant queries."""

    history_list_display = ["history_actor", "history_change_reason", "history_request_id"]

    def get_history_queryset(
        self, request: HttpRequest, history_manager: Any, pk_name: str, object_id: Any
    ) -> QuerySet:
        return trail(history_manager.filter(**{pk_name: object_id}))

    def set_history_delta_changes(
        self, request: HttpRequest, historical_records: Any, foreign_keys_are_objs: bool = True
    ) -> None:
        # Every row of the page gets its changes, the oldest too (against the row before the page):
        # simple-history's own loop leaves a page's oldest row without them.
        for entry in with_previous(historical_records):
            delta = entry.delta(foreign_keys_are_objs=foreign_keys_are_objs)
            if delta is not None:
                helper = self.get_historical_record_context_helper(request, entry.record)
                entry.record.history_delta_changes = helper.context_for_delta_changes(delta)


class AuditedAdmin(HistoryAdmin):
    """Base admin for models whose changes are audited through service functions."""

    form = ReasonForm
    delete_confirmation_template = "admin/mutt/delete_confirmation.html"
    # Subclasses point these at their app's service functions.
    save_service: Callable[..., models.Model]
    delete_service: Callable[..., None]
    delete_many_service: Callable[..., int]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by the audited version below
        if self.has_delete_permission(request):
            actions["delete_with_reason"] = self.get_action("delete_with_reason")
        return actions

    @admin.action(description="Delete selected (asks for a reason)")
    def delete_with_reason(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return confirm_with_reason(
            self,
            request,
            queryset,
            action="delete_with_reason",
            title="Delete with a reason",
            perform=lambda actor, objs, reason: type(self).delete_many_service(
                actor=actor, objects=objs, reason=reason
            ),
            done="Deleted {count} object(s).",
        )

    def save_model(self, request: HttpRequest, obj: models.Model, form: forms.ModelForm, change: bool) -> None:
        reason = form.cleaned_data.get(REASON_FIELD, "") if form else ""
        type(self).save_service(obj, actor=Actor.for_user(request.user), reason=reason)

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        reason = clip_reason(request.POST.get(REASON_FIELD, ""))
        type(self).delete_service(obj, actor=Actor.for_user(request.user), reason=reason)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        type(self).delete_many_service(actor=Actor.for_user(request.user), objects=list(queryset), reason="")
