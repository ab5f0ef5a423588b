"""Operators' admin for the dead-letter queues.

*DLQ actions* is the read-only audit of every replay, purge and move to the dead queue. From its page,
*Queues* lists the entries in Redis (queue selector, reason filter, depth per queue, newest first), an
entry's page shows its payload and error, and replay, purge and "move to dead" ask for a reason before
they run through :mod:`delivery.services`, so each is audited with the user, the reason and the request id.
Only superusers and staff holding ``delivery.manage_dlq`` see the queues: payloads are event data.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from core import contracts
from core.admin_audit import page_context, submitted_reason
from core.audit import Actor
from core.redis import get_redis
from delivery import dlq, services
from delivery.models import DlqAction

MANAGE_PERMISSION = "delivery.manage_dlq"
PAGE_SIZE = 50
KNOWN_REASONS = {
    contracts.ALERTER_QUEUE: list(contracts.ALERTER_DLQ_REASONS),
    contracts.MOOG_QUEUE: [
        contracts.RETRIES_EXHAUSTED,
        contracts.MALFORMED,
        *(contracts.http_reason(status) for status in (400, 401, 403, 404, 413)),
    ],
    contracts.DEAD_QUEUE: [],
}
ACTIONS = {
    "replay": ("Replay", "Put the entries back where they came from (Moogsoft alerts with fresh retries)."),
    "purge": ("Purge", "Delete the entries for good."),
    "dead": ("Move to the dead queue", "Take the entries out of automatic remediation."),
}


def actions_for(queue: str) -> list[tuple[str, str]]:
    """(name, label) of the actions offered on ``queue``: dead entries cannot be moved to the dead queue."""
    return [
        (name, label) for name, (label, _) in ACTIONS.items() if not (queue == contracts.DEAD_QUEUE and name == "dead")
    ]


def can_manage(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and (user.is_superuser or user.has_perm(MANAGE_PERMISSION)))


@admin.register(DlqAction)
class DlqActionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "queue", "count", "outcome", "actor", "reason", "request_id"]
    list_filter = ["action", "queue", "outcome"]
    search_fields = ["actor", "reason", "=request_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in DlqAction._meta.fields]
    change_list_template = "admin/delivery/dlqaction/change_list.html"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or can_manage(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit trail is append-only

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "can_manage_dlq": can_manage(request)})

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("queues/", wrap(self.queues_view), name="delivery_dlq_queues"),
            path("queues/<str:queue>/act/", wrap(require_POST(self.act_view)), name="delivery_dlq_act"),
            path("queues/<str:queue>/<str:entry_id>/", wrap(self.entry_view), name="delivery_dlq_entry"),
            *super().get_urls(),
        ]

    # --- views --------------------------------------------------------------------------------

    def queues_view(self, request: HttpRequest) -> HttpResponse:
        """One queue's entries, newest first, filtered by reason, with checkboxes for the actions."""
        self._require_manage(request)
        client = get_redis()
        queue = request.GET.get("queue", contracts.MOOG_QUEUE)
        if queue not in contracts.DLQ_QUEUES:
            queue = contracts.MOOG_QUEUE
        reason = request.GET.get("reason", "").strip()
        page = dlq.list_entries(client, queue, reason=reason or None, before=request.GET.get("before"), limit=PAGE_SIZE)
        counts = dlq.replay_counts(client, page.entries)
        rows = [{"entry": entry, "replays": counts.get(entry.id, 0)} for entry in page.entries]
        next_url = ""
        if page.next_before:
            next_url = "?" + urlencode({"queue": queue, "reason": reason, "before": page.next_before})
        context = page_context(
            self,
            request,
            "Dead-letter queues",
            queue=queue,
            reason=reason,
            reasons=self._reasons(client, queue),
            depths=dlq.depths(client),
            rows=rows,
            next_url=next_url,
            actions=actions_for(queue),
            delivery=delivery_status(client),
        )
        return TemplateResponse(request, "admin/delivery/dlq_queues.html", context)

    def entry_view(self, request: HttpRequest, queue: str, entry_id: str) -> HttpResponse:
        """One entry: every field, the payload as indented JSON, and how often its event was replayed."""
        self._require_manage(request)
        if queue not in contracts.DLQ_QUEUES:
            raise Http404("no such queue")
        client = get_redis()
        entry = dlq.get_entry(client, queue, entry_id)
        if entry is None:
            self.message_user(request, f"Entry {entry_id} is no longer in the {queue} queue.", messages.WARNING)
            return HttpResponseRedirect(self._queue_url(queue))
        context = page_context(
            self,
            request,
            f"{queue} DLQ entry {entry.id}",
            queue=queue,
            entry=entry,
            replays=dlq.replay_counts(client, [entry]).get(entry.id, 0),
            payload=entry.payload_text(),
            other_fields={
                k: v for k, v in sorted(entry.fields.items()) if k not in {"reason", "error", "response", "attempts"}
            },
            actions=actions_for(queue),
        )
        return TemplateResponse(request, "admin/delivery/dlq_entry.html", context)

    def act_view(self, request: HttpRequest, queue: str) -> HttpResponse:
        """Ask for a reason for the selected entries, then replay, purge or bury them through the service."""
        self._require_manage(request)
        if queue not in contracts.DLQ_QUEUES:
            raise Http404("no such queue")
        action = request.POST.get("action", "")
        entry_ids = [i for i in request.POST.getlist("ids") if i]
        if action not in ACTIONS or (queue == contracts.DEAD_QUEUE and action == "dead"):
            self.message_user(request, "Choose an action.", messages.ERROR)
            return HttpResponseRedirect(self._queue_url(queue))
        if not entry_ids:
            self.message_user(request, "Select at least one entry.", messages.WARNING)
            return HttpResponseRedirect(self._queue_url(queue))
        form, reason = submitted_reason(request)
        if reason is not None:
            report = self._perform(request, action, queue, entry_ids, reason)
            level = messages.SUCCESS if not (report.missing or report.invalid) else messages.WARNING
            label = ACTIONS[action][0]
            message = f"{label} on the {queue} queue: {report.summary()}."
            if report.missing:
                message += f" No longer in the queue (already handled?): {', '.join(report.missing[:20])}."
            if report.invalid:
                message += f" Not replayable as they are: {', '.join(report.invalid[:20])}."
            self.message_user(request, message, level)
            return HttpResponseRedirect(self._queue_url(queue))
        client = get_redis()
        found = {entry.id: entry for entry in (dlq.get_entry(client, queue, i) for i in entry_ids) if entry}
        context = page_context(
            self,
            request,
            f"{ACTIONS[action][0]}: {len(entry_ids)} {queue} DLQ entries",
            queue=queue,
            action=action,
            action_label=ACTIONS[action][0],
            action_help=ACTIONS[action][1],
            selected=[(i, found.get(i)) for i in entry_ids],
            hidden_selection=[("ids", i) for i in entry_ids],
            cancel_url=self._queue_url(queue),
            form=form,
        )
        return TemplateResponse(request, "admin/delivery/dlq_confirm.html", context)

    # --- helpers ------------------------------------------------------------------------------

    def _perform(
        self, request: HttpRequest, action: str, queue: str, entry_ids: list[str], reason: str
    ) -> services.ActionReport:
        actor = Actor.for_user(request.user)
        service = {
            "replay": services.replay_entries,
            "purge": services.purge_entries,
            "dead": services.bury_entries,
        }[action]
        return service(actor=actor, queue=queue, entry_ids=entry_ids, reason=reason)

    def _require_manage(self, request: HttpRequest) -> None:
        if not can_manage(request):
            raise PermissionDenied

    def _queue_url(self, queue: str) -> str:
        return reverse("admin:delivery_dlq_queues") + "?" + urlencode({"queue": queue})

    def _reasons(self, client: Any, queue: str) -> list[str]:
        """Reasons to filter by: the known ones, and any seen among the newest entries."""
        seen = {entry.reason for entry in dlq.list_entries(client, queue, limit=500).entries if entry.reason}
        return sorted(set(KNOWN_REASONS[queue]) | seen)


def delivery_status(client: Any) -> Any:
    """The shared circuit breaker, the retry schedule and the alerts held or unread, read from Redis now
    (never a gauge of this process, which does not forward)."""
    from delivery.status import read_state

    return read_state(client)
