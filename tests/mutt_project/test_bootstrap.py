"""First-run setup: once only, a private credentials file, re-issue when the file is lost."""

from __future__ import annotations

import stat

import pytest
from django.contrib.auth import authenticate

from configcenter.models import ApiKey
from configcenter.services import find_active_key
from mutt_project.bootstrap import SAMPLE_RULES, bootstrap
from rules.models import AlertRule, DevHost, DeviceTeam

pytestmark = pytest.mark.django_db(transaction=True)


def run(path):
    return bootstrap(path, http_url="http://127.0.0.1:8000", mock_moog_url="http://127.0.0.1:18080")


def test_first_run_creates_admin_keys_samples_and_a_private_file(tmp_path):
    path = tmp_path / "credentials.json"
    creds = run(path)
    assert set(creds) == {
        "admin_username",
        "admin_password",
        "api_key",
        "ingest_api_key",
        "http_url",
        "mock_moog_url",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert authenticate(username=creds["admin_username"], password=creds["admin_password"]) is not None
    assert find_active_key(creds["api_key"]).scopes == ["admin"]
    assert find_active_key(creds["ingest_api_key"]).scopes == ["ingest"]
    assert AlertRule.objects.count() == len(SAMPLE_RULES)
    assert DevHost.objects.exists()
    assert DeviceTeam.objects.exists()
    record = AlertRule.objects.first().history.get()
    assert record.history_actor == "system:bootstrap"
    assert record.history_change_reason == "sample data for a new installation"


def test_second_run_changes_nothing(tmp_path):
    path = tmp_path / "credentials.json"
    first = run(path)
    second = run(path)
    assert first == second
    assert AlertRule.objects.count() == len(SAMPLE_RULES)
    assert ApiKey.objects.count() == 2


def test_sample_data_is_not_reloaded_after_an_operator_deleted_it(tmp_path):
    from core.audit import Actor
    from rules import services

    path = tmp_path / "credentials.json"
    run(path)
    services.delete_many(actor=Actor.cli("ops"), objects=list(AlertRule.objects.all()), reason="start clean")
    run(path)
    assert AlertRule.objects.count() == 0


def test_lost_credentials_are_reissued_and_old_keys_revoked(tmp_path):
    path = tmp_path / "credentials.json"
    first = run(path)
    path.unlink()
    second = run(path)
    assert second["admin_password"] != first["admin_password"]
    assert authenticate(username="admin", password=first["admin_password"]) is None
    assert authenticate(username="admin", password=second["admin_password"]) is not None
    assert find_active_key(first["api_key"]) is None
    assert find_active_key(second["api_key"]) is not None
    revoked = ApiKey.objects.get(name="bootstrap-admin")
    assert (
        revoked.history.order_by("-history_id").first().history_change_reason == "credentials file lost; key re-issued"
    )
