"""The retention admin: run records and the archive inventory (read-only), and the Retention overview."""

from __future__ import annotations

import importlib.util
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from core import streams
from core.audit import Actor
from retention.models import ArchivedPartition, ArchiveState, RetentionRun
from retention.service import run_retention
from tests.support.retention_stores import fill_dlq
from tests.support.waiting import apply_setting

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>")


@pytest.fixture
def viewer(client, db):
    """A staff member who may view retention's records and nothing more."""
    user = get_user_model().objects.create_user("vera", password="correct horse 42", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_retentionrun", "view_archivedpartition"]))
    client.force_login(user)
    return client


@pytest.fixture
def runs(redis_client, db):
    names = [streams.dlq_stream(q) for q in ("alerter", "moog", "dead")]
    redis_client.delete(*names)
    fill_dlq(redis_client, "alerter", [(40, "shed"), (39, "malformed")])
    done = run_retention(Actor.cli("alice"), "monthly", only="dlq")[0]
    dry = run_retention(Actor.cli("alice"), "rehearsal", only="history", dry_run=True)[0]
    yield done, dry
    redis_client.delete(*names)


def test_the_runs_list_filters_by_policy_outcome_and_dry_run(viewer, runs):
    url = reverse("admin:retention_retentionrun_changelist")
    page = viewer.get(url)
    assert page.status_code == 200
    assert page.content.decode().count('class="field-policy"') == 2
    only_dlq = viewer.get(url, {"policy": "dlq", "outcome__exact": "done", "dry_run__exact": "0"}).content.decode()
    assert only_dlq.count('class="field-policy"') == 1
    assert "monthly" in only_dlq
    assert "rehearsal" not in only_dlq
    assert reverse("admin:retention_overview") in page.content.decode()


def test_a_run_page_shows_its_details_readably_and_cannot_be_changed(viewer, runs):
    done, _ = runs
    page = viewer.get(reverse("admin:retention_retentionrun_change", args=[done.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert '<pre class="retention-json">' in text
    assert "&quot;malformed&quot;: 1" in text  # the counts per reason, indented JSON
    assert 'name="_save"' not in text  # read-only: no save button
    assert viewer.get(reverse("admin:retention_retentionrun_add")).status_code == 403
    assert viewer.post(reverse("admin:retention_retentionrun_delete", args=[done.pk])).status_code == 403
    assert RetentionRun.objects.filter(pk=done.pk).exists()


def test_the_archive_inventory_lists_archived_partitions(viewer):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    archive = ArchivedPartition.objects.create(
        partition="rules_eventauditlog_y2026m01", range_start=start, range_end=datetime(2026, 2, 1, tzinfo=UTC),
        state=ArchiveState.DROPPED, store="s3://audit/mutt", rows=1234, bytes=56_789,
        files=[{"key": "y2026m01/part-0.parquet", "sha256": "ab" * 32, "bytes": 56_789, "rows": 1234}],
    )  # fmt: skip
    listing = viewer.get(reverse("admin:retention_archivedpartition_changelist")).content.decode()
    assert "rules_eventauditlog_y2026m01" in listing
    page = viewer.get(reverse("admin:retention_archivedpartition_change", args=[archive.pk])).content.decode()
    assert "ab" * 32 in page
    assert viewer.get(reverse("admin:retention_archivedpartition_add")).status_code == 403


def test_the_app_index_links_the_overview(viewer):
    page = viewer.get(reverse("admin:app_list", args=["retention"])).content.decode()
    assert f'href="{reverse("admin:retention_overview")}"' in page


@pytest.mark.django_db(transaction=True)
def test_the_overview_shows_the_hold_the_last_runs_the_schedules_and_the_partitions(viewer, runs):
    from django_q.models import Schedule

    apply_setting("retention_legal_hold", True, reason="matter 2026-114")
    due = timezone.now() + timedelta(hours=5)
    Schedule.objects.create(name="retention_history", func="retention.jobs.retention_history", next_run=due)

    page = viewer.get(reverse("admin:retention_overview"))

    text = page.content.decode()
    assert page.status_code == 200
    assert "<strong>On</strong>: retention deletes nothing" in text
    assert "matter 2026-114" in text
    assert "<code>dlq_retention_days</code></td><td>30 days</td>" in text
    assert reverse("admin:configcenter_dynamicsetting_changelist") in text  # the hold is changed there
    done, _ = runs
    assert reverse("admin:retention_retentionrun_change", args=[done.pk]) in text
    assert "never run" in text  # events, archives and history have no real run
    assert "retention_history" in text
    assert due.strftime("%Y-%m-%d %H:%M") in text
    if importlib.util.find_spec("retention.partitions") and hasattr(
        importlib.import_module("retention.partitions"), "list_partitions"
    ):
        assert 'id="partitions"' in text
    else:
        assert "no partition listing" in text
    assert INLINE_SCRIPT.findall(text) == []  # CSP: scripts come from files only


def test_the_overview_is_for_those_who_may_view_runs(client, db):
    user = get_user_model().objects.create_user("sam", password="correct horse 42", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:retention_overview")).status_code == 403
