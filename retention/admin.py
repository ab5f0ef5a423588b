"""Operators' admin for retention: the run records, the archive inventory and the Retention overview.

Everything here is read-only: runs are started by the daily jobs or ``manage.py retention run``, and the
one switch an operator turns from the admin, the legal hold, is a runtime setting changed (and audited)
through the config center's own page, which the overview links to. The overview (linked from the app
index and from the runs list) shows the legal hold and its last change, the last run of each policy, the
next scheduled times (django-q's schedules) and the event log's partitions with their estimated rows and
sizes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from core.admin_audit import page_context
from retention import service
from retention.models import ArchivedPartition, RetentionRun

logger = logging.getLogger("mutt.retention")


def pretty_json(value: Any) -> str:
    return format_html('<pre class="retention-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True))


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by retention itself: viewable, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RetentionRun)
class RetentionRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at", "policy", "outcome", "dry_run", "actor", "reason", "rows_archived", "rows_deleted",
        "finished_at",
    ]  # fmt: skip
    list_filter = ["policy", "outcome", "dry_run"]
    search_fields = ["actor", "reason", "=request_id", "error"]
    date_hierarchy = "started_at"
    fields = (
        "policy", "outcome", "dry_run", "actor", "reason", "request_id", "started_at", "finished_at",
        "rows_archived", "rows_deleted", "bytes_archived", "bytes_deleted", "error", "details_shown",
    )  # fmt: skip
    readonly_fields = fields
    change_list_template = "admin/retention/retentionrun/change_list.html"

    @admin.display(description="details")
    def details_shown(self, obj: RetentionRun) -> str:
        """Counts per reason or model, time ranges, files and checksums, the plan of a dry run."""
        return pretty_json(obj.details)

    def get_urls(self) -> list[URLPattern]:
        overview = path("overview/", self.admin_site.admin_view(self.overview_view), name="retention_overview")
        return [overview, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        hold = service.legal_hold()
        hold_url = (
            reverse("admin:configcenter_dynamicsetting_change", args=[hold["setting_id"]])
            if hold["setting_id"] is not None
            else reverse("admin:configcenter_dynamicsetting_changelist") + "?q=retention_legal_hold"
        )
        partitions, partitions_error = _partitions()
        context = page_context(
            self,
            request,
            "Retention",
            hold=hold,
            hold_url=hold_url,
            settings=service.retention_settings(),
            last_runs=service.last_runs(),
            schedules=service.schedules(),
            partitions=partitions,
            partitions_error=partitions_error,
            archives=ArchivedPartition.objects.order_by("-range_start")[:24],
            archive_count=ArchivedPartition.objects.count(),
        )
        return TemplateResponse(request, "admin/retention/overview.html", context)


def _partitions() -> tuple[list[Any], str]:
    """The event log's partitions (the partition manager's list), or why they cannot be shown."""
    try:
        from retention.partitions import list_partitions  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return [], "This build has no partition listing (retention.partitions.list_partitions)."
    try:
        return list(list_partitions()), ""
    except DatabaseError as exc:
        logger.warning("the retention overview could not list the partitions: %s", exc)
        return [], f"The partitions could not be read: {type(exc).__name__}."


@admin.register(ArchivedPartition)
class ArchivedPartitionAdmin(ReadOnlyAdmin):
    list_display = ["partition", "range_start", "range_end", "state", "rows", "bytes", "store", "dropped_at"]
    list_filter = ["state"]
    search_fields = ["partition", "content_checksum"]
    fields = (
        "partition", "state", "range_start", "range_end", "store", "manifest_key", "rows", "bytes", "min_id",
        "max_id", "schema_version", "content_checksum", "files_shown", "run", "created_at", "verified_at",
        "dropped_at", "expired_at",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="files")
    def files_shown(self, obj: ArchivedPartition) -> str:
        return pretty_json(obj.files)
