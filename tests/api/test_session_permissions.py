"""Sessions reach the API with the Django model permissions the admin would ask for; secrets need a superuser."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from configcenter.models import DynamicSetting
from core.audit import Actor
from rules import services
from rules.models import AlertRule

pytestmark = pytest.mark.django_db

RULE = {"name": "Interface down", "match_type": "contains", "match_string": "changed state to down", "priority": 10}
SETTING = "/api/v2/config/moog_timeout"


@pytest.fixture
def rule():
    return services.create(AlertRule, actor=Actor.cli("setup"), reason="test rule", **RULE)


def staff_client(client, *codenames: str):
    """A client logged in as a staff user (not superuser) holding exactly ``codenames``."""
    user = get_user_model().objects.create_user("bob", password="pw-bob-12345", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


def reads(rule) -> list[str]:
    return [
        "/api/v2/rules/", f"/api/v2/rules/{rule.pk}/", f"/api/v2/rules/{rule.pk}/history/", "/api/v2/dev-hosts/",
        "/api/v2/device-teams/", "/api/v2/config", SETTING, f"{SETTING}/history", "/api/v2/secrets",
    ]  # fmt: skip


def test_a_staff_session_without_permissions_reads_nothing(client, rule):
    staff = staff_client(client)
    for url in reads(rule):
        assert staff.get(url).status_code == 403, url


def test_view_permission_reads_but_does_not_write(client, rule):
    staff = staff_client(client, "view_alertrule", "view_dynamicsetting")
    for url in ("/api/v2/rules/", f"/api/v2/rules/{rule.pk}/history/", "/api/v2/config", f"{SETTING}/history"):
        assert staff.get(url).status_code == 200, url
    assert staff.get("/api/v2/dev-hosts/").status_code == 403  # no view_devhost
    assert staff.get("/api/v2/secrets").status_code == 403  # superusers (or admin-scope keys) only
    body = {"value": 2.5, "reason": "slow"}
    assert staff.put(SETTING, body, content_type="application/json").status_code == 403
    assert staff.delete(SETTING, HTTP_X_CHANGE_REASON="x").status_code == 403
    created = staff.post("/api/v2/rules/", {**RULE, "name": "other"}, content_type="application/json")
    assert created.status_code == 403
    assert staff.patch(f"/api/v2/rules/{rule.pk}/", {"priority": 5}, content_type="application/json").status_code == 403
    assert staff.delete(f"/api/v2/rules/{rule.pk}/").status_code == 403
    assert DynamicSetting.objects.get(key="moog_timeout").value is None
    assert AlertRule.objects.get(pk=rule.pk).priority == 10


def test_change_permission_writes_as_in_the_admin(client, rule):
    staff = staff_client(client, "view_dynamicsetting", "change_dynamicsetting", "change_alertrule")
    response = staff.put(SETTING, {"value": 2.5, "reason": "slow"}, content_type="application/json")
    assert response.status_code == 200
    assert DynamicSetting.objects.get(key="moog_timeout").history.latest("history_id").history_actor == "user:bob"
    # Returning to the default is a change too, as the admin's "use the default".
    assert staff.delete(SETTING, HTTP_X_CHANGE_REASON="recovered").status_code == 200
    patched = staff.patch(f"/api/v2/rules/{rule.pk}/", {"priority": 5}, content_type="application/json")
    assert patched.status_code == 200
    assert staff.delete(f"/api/v2/rules/{rule.pk}/").status_code == 403  # no delete_alertrule


def test_a_superuser_session_and_an_admin_key_read_the_secrets_status(admin_client_alice, api_keys, client):
    assert admin_client_alice.get("/api/v2/secrets").status_code == 200
    admin_client_alice.logout()
    assert client.get("/api/v2/secrets", HTTP_X_API_KEY=api_keys["admin"]).status_code == 200
    assert client.get("/api/v2/secrets", HTTP_X_API_KEY=api_keys["write"]).status_code == 403
