"""Secrets never appear in API responses, admin pages, CLI output, queue messages or history rows."""

from __future__ import annotations

import json
import sys
from io import StringIO

import pytest
from django.core.management import call_command

from core import streams
from core.secrets import fingerprint, reset_secrets
from mutt_project.checks import check_deployment_settings
from tests.support.events import make_event, push

MOOG_KEY = "moog-key-Zq8#unique-4471"
NEXT_KEY = "moog-key-next-Vw2!unique-9930"


@pytest.fixture
def moog_secret(settings, tmp_path):
    current, upcoming = tmp_path / "moog.current", tmp_path / "moog.next"
    current.write_text(MOOG_KEY)
    upcoming.write_text(NEXT_KEY)
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_CURRENT_FILE": str(current), "MOOG_API_KEY_NEXT_FILE": str(upcoming)}
    reset_secrets()
    yield
    reset_secrets()


def assert_no_secret(text: str) -> None:
    assert MOOG_KEY not in text
    assert NEXT_KEY not in text
    assert MOOG_KEY[:12] not in text


@pytest.mark.django_db
def test_the_api_shows_sources_and_fingerprints_only(client, api_keys, moog_secret):
    response = client.get("/api/v2/secrets", HTTP_X_API_KEY=api_keys["admin"])
    assert response.status_code == 200
    assert_no_secret(response.content.decode())
    row = next(r for r in response.json()["results"] if r["name"] == "MOOG_API_KEY")
    assert (row["source"], row["has_current"], row["has_next"]) == ("file", True, True)
    assert row["current"] == f"set (hmac:{fingerprint(MOOG_KEY)})"
    assert client.get("/api/v2/secrets", HTTP_X_API_KEY=api_keys["read"]).status_code == 403


@pytest.mark.django_db
def test_the_admin_page_shows_fingerprints_only(admin_client_alice, moog_secret):
    response = admin_client_alice.get("/admin/configcenter/apikey/secrets/")
    assert response.status_code == 200
    page = response.content.decode()
    assert_no_secret(page)
    assert fingerprint(MOOG_KEY) in page


@pytest.mark.django_db
def test_muttctl_status_is_masked_and_fingerprint_matches(moog_secret, monkeypatch):
    out = StringIO()
    call_command("muttctl", "--json", "secrets", "status", stdout=out)
    assert_no_secret(out.getvalue())
    monkeypatch.setattr(sys, "stdin", StringIO(MOOG_KEY + "\n"))
    printed = StringIO()
    call_command("muttctl", "secrets", "fingerprint", stdout=printed)
    assert printed.getvalue().strip() == fingerprint(MOOG_KEY)
    assert any(r["current"].endswith(f"{printed.getvalue().strip()})") for r in json.loads(out.getvalue()))


def test_fingerprints_depend_on_the_deployment_key(settings):
    first = fingerprint(MOOG_KEY)
    settings.SECRET_KEY = "another-deployment-key"
    assert fingerprint(MOOG_KEY) != first


@pytest.mark.django_db(transaction=True)
def test_queue_messages_and_audit_rows_carry_no_secret(redis_client, clean_pipeline, moog_secret):
    from core.audit import Actor
    from rules import services
    from rules.alerter import Alerter
    from rules.models import AlertRule, EventAuditLog

    services.create(AlertRule, actor=Actor.cli("t"), name="r", match_type="contains", match_string="down")
    push(redis_client, [make_event()])
    Alerter("a1").step(block_ms=10)
    queued = [redis_client.xrange(streams.ingest_stream()), redis_client.xrange(streams.alerts_stream())]
    assert_no_secret(repr(queued))
    assert_no_secret(repr(list(EventAuditLog.objects.values())))


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"VAULT_AUTH_METHOD": "kerberos"}, "mutt.E003"),
        ({"VAULT_AUTH_METHOD": "token", "VAULT_TOKEN": ""}, "mutt.E004"),
        ({"VAULT_AUTH_METHOD": "approle", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID_FILE": "/nonexistent"}, "mutt.E005"),
    ],
)
def test_vault_misconfiguration_is_a_system_check(settings, overrides, check_id):
    settings.VAULT_ADDR = "http://127.0.0.1:8200"
    for name, value in overrides.items():
        setattr(settings, name, value)
    assert check_id in [message.id for message in check_deployment_settings()]
