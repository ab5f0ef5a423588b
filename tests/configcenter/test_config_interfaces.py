"""The three ways to change a setting (muttctl, API, admin) share one audited service."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from configcenter import settings_service
from configcenter.models import ApiKey, DynamicSetting
from core.audit import Actor

BASE_DIR = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def muttctl(*args: str) -> str:
    out = StringIO()
    call_command("muttctl", *args, stdout=out)
    return out.getvalue()


# --- muttctl --------------------------------------------------------------------------------


def test_muttctl_set_get_history_and_unset():
    muttctl("--actor", "bob", "config", "set", "moog_timeout", "2.5s", "--reason", "Moogsoft is slow")
    got = json.loads(muttctl("--json", "config", "get", "moog_timeout"))
    assert (got["value"], got["default"], got["is_default"]) == (2.5, 10.0, False)
    history = json.loads(muttctl("--json", "config", "history", "moog_timeout"))
    assert history[0]["actor"] == "cli:bob"
    assert history[0]["reason"] == "Moogsoft is slow"
    assert (history[0]["old"], history[0]["new"]) == ("(default 10s)", "2.5s")
    muttctl("config", "unset", "moog_timeout", "--reason", "recovered")
    assert json.loads(muttctl("--json", "config", "get", "moog_timeout"))["is_default"] is True


def test_muttctl_list_shows_every_key_in_a_table_or_json():
    table = muttctl("config", "list")
    assert table.splitlines()[0].split() == ["KEY", "VALUE", "DEFAULT", "TYPE", "BOUNDS", "COMPONENT"]
    rows = json.loads(muttctl("--json", "config", "list"))
    assert {r["key"] for r in rows} == set(settings_service.REGISTRY)


def test_muttctl_refuses_bad_keys_and_values_clearly():
    with pytest.raises(CommandError, match="unknown setting 'moog_timout'"):
        muttctl("config", "get", "moog_timout")
    with pytest.raises(CommandError, match="ingest_max_batch: 0 events is below the minimum of 1 events"):
        muttctl("config", "set", "ingest_max_batch", "0", "--reason", "x")


def test_muttctl_exits_non_zero_with_the_message(child_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "muttctl", "config", "set", "alerter_shed_mode", "panic", "--reason", "x"],
        cwd=BASE_DIR, env=child_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "alerter_shed_mode: expected one of dlq, defer, got 'panic'" in result.stderr
    assert "Traceback" not in result.stderr


def test_muttctl_requires_a_reason_to_set():
    with pytest.raises(CommandError, match="--reason"):
        muttctl("config", "set", "moog_timeout", "5")


def test_muttctl_creates_lists_and_revokes_api_keys():
    created = json.loads(muttctl("--json", "--actor", "sec", "apikey", "create", "rsyslog-dc1", "--scope", "ingest"))
    assert created["key"].startswith("mutt_")
    listed = muttctl("apikey", "list")
    assert "rsyslog-dc1" in listed
    assert created["key"] not in listed
    muttctl("--actor", "sec", "apikey", "revoke", "rsyslog-dc1", "--reason", "host retired")
    key = ApiKey.objects.get(name="rsyslog-dc1")
    assert key.revoked_at is not None
    record = key.history.order_by("-history_id").first()
    assert (record.history_actor, record.history_change_reason) == ("cli:sec", "host retired")


# --- API ------------------------------------------------------------------------------------


def test_api_lists_and_reads_settings(client, api_keys):
    listing = client.get("/api/v2/config", HTTP_X_API_KEY=api_keys["read"])
    assert listing.status_code == 200
    assert listing["X-API-Version"] == "v2"
    assert {r["key"] for r in listing.json()["results"]} == set(settings_service.REGISTRY)
    one = client.get("/api/v2/config/moog_timeout", HTTP_X_API_KEY=api_keys["read"]).json()
    assert (one["value"], one["type"], one["minimum"], one["maximum"]) == (10.0, "duration", 0.1, 300)


def test_api_put_needs_admin_scope_and_is_audited(client, api_keys):
    body = {"value": 25, "reason": "more throughput"}
    for scope in ("read", "write", "ingest"):
        response = client.put(
            "/api/v2/config/moog_rate_limit", body, content_type="application/json", HTTP_X_API_KEY=api_keys[scope]
        )
        assert response.status_code == 403, scope
    response = client.put(
        "/api/v2/config/moog_rate_limit", body, content_type="application/json", HTTP_X_API_KEY=api_keys["admin"]
    )
    assert response.status_code == 200
    assert response.json()["value"] == 25
    record = DynamicSetting.history.filter(key="moog_rate_limit").order_by("-history_id").first()
    assert (record.history_actor, record.history_change_reason, record.value) == (
        "apikey:admin-key",
        "more throughput",
        25,
    )
    history = client.get("/api/v2/config/moog_rate_limit/history", HTTP_X_API_KEY=api_keys["read"]).json()
    assert (history["results"][0]["old_effective"], history["results"][0]["new_effective"]) == (50, 25)


def test_api_put_refuses_bad_values_naming_the_field_and_bound(client, api_keys):
    response = client.put(
        "/api/v2/config/moog_rate_limit", {"value": 0, "reason": "x"}, content_type="application/json",
        HTTP_X_API_KEY=api_keys["admin"],
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["errors"]["value"] == ["0 requests is below the minimum of 1 requests"]
    missing_reason = client.put(
        "/api/v2/config/moog_rate_limit", {"value": 5}, content_type="application/json",
        HTTP_X_API_KEY=api_keys["admin"],
    )  # fmt: skip
    assert missing_reason.status_code == 400
    assert "reason" in missing_reason.json()["errors"]
    assert DynamicSetting.objects.get(key="moog_rate_limit").value is None


def test_api_unknown_key_is_404_with_a_clear_message(client, api_keys):
    response = client.get("/api/v2/config/nope", HTTP_X_API_KEY=api_keys["read"])
    assert response.status_code == 404
    assert "unknown setting 'nope'" in response.json()["detail"]


def test_api_delete_returns_a_key_to_its_default(client, api_keys):
    settings_service.set_setting("moog_rate_limit", 9, actor=Actor.cli("ops"))
    response = client.delete(
        "/api/v2/config/moog_rate_limit", HTTP_X_API_KEY=api_keys["admin"], HTTP_X_CHANGE_REASON="revert"
    )
    assert response.status_code == 200
    assert response.json()["is_default"] is True


# --- admin ----------------------------------------------------------------------------------


def test_admin_lists_every_setting_with_its_default(admin_client_alice):
    page = admin_client_alice.get(reverse("admin:configcenter_dynamicsetting_changelist")).content.decode()
    for key in ("moog_timeout", "ingest_max_rate", "alerter_shed_mode"):
        assert key in page


def test_admin_edit_validates_and_records_the_reason(admin_client_alice):
    row = DynamicSetting.objects.get(key="circuit_breaker_threshold")
    url = reverse("admin:configcenter_dynamicsetting_change", args=[row.pk])
    refused = admin_client_alice.post(url, {"new_value": "0", "change_reason": "x"})
    assert refused.status_code == 200
    assert "below the minimum of 1 failures" in refused.content.decode()
    saved = admin_client_alice.post(url, {"new_value": "8", "change_reason": "noisy network"})
    assert saved.status_code == 302
    row.refresh_from_db()
    assert row.value == 8
    record = row.history.order_by("-history_id").first()
    assert (record.history_actor, record.history_change_reason) == ("user:alice", "noisy network")
    reset = admin_client_alice.post(url, {"new_value": "", "use_default": "on", "change_reason": "default"})
    assert reset.status_code == 302
    row.refresh_from_db()
    assert row.value is None


def test_admin_history_page_shows_old_and_new_values(admin_client_alice):
    settings_service.set_setting("dlq_retention_days", 14, actor=Actor.cli("ops"), reason="disk pressure")
    row = DynamicSetting.objects.get(key="dlq_retention_days")
    page = admin_client_alice.get(reverse("admin:configcenter_dynamicsetting_history", args=[row.pk])).content.decode()
    assert "disk pressure" in page
    assert "cli:ops" in page
    assert "14" in page
