"""The v2 rules API: API-key auth and scopes, audited writes, clear errors, version headers."""

from __future__ import annotations

import pytest

from configcenter import services as key_services
from configcenter.models import ApiKey
from core.audit import Actor
from rules import services
from rules.models import AlertRule, DevHost

pytestmark = pytest.mark.django_db

RULE = {
    "name": "Interface down",
    "match_type": "contains",
    "match_string": "changed state to down",
    "priority": 10,
}


def auth(key: str) -> dict[str, str]:
    return {"HTTP_X_API_KEY": key}


def test_write_key_creates_a_rule_audited_as_the_key(client, api_keys):
    response = client.post(
        "/api/v2/rules/",
        {**RULE, "reason": "CHG-7"},
        content_type="application/json",
        **auth(api_keys["write"]),
    )
    assert response.status_code == 201, response.json()
    assert response["X-API-Version"] == "v2"
    assert "reason" not in response.json()
    record = AlertRule.objects.get(pk=response.json()["id"]).history.get()
    assert (record.history_actor, record.history_change_reason) == ("apikey:write-key", "CHG-7")
    assert record.history_request_id == response["X-Request-ID"]


def test_bearer_token_is_accepted(client, api_keys):
    response = client.get("/api/v2/rules/", HTTP_AUTHORIZATION=f"Bearer {api_keys['read']}")
    assert response.status_code == 200


def test_missing_or_wrong_key_is_401_and_wrong_scope_is_403(client, api_keys):
    assert client.get("/api/v2/rules/").status_code == 401
    assert client.get("/api/v2/rules/", **auth("mutt_deadbeef_nope")).status_code == 401
    assert client.get("/api/v2/rules/", **auth("not-a-key")).status_code == 401
    assert client.get("/api/v2/rules/", **auth(api_keys["ingest"])).status_code == 403
    read_post = client.post("/api/v2/rules/", RULE, content_type="application/json", **auth(api_keys["read"]))
    assert read_post.status_code == 403
    assert AlertRule.objects.count() == 0


def test_revoked_key_is_refused(client, api_keys):
    key = ApiKey.objects.get(name="admin-key")
    key_services.revoke_api_key(actor=Actor.cli("sec"), api_key=key, reason="leaked")
    assert client.get("/api/v2/rules/", **auth(api_keys["admin"])).status_code == 401
    assert key.history.order_by("-history_id").first().history_change_reason == "leaked"


def test_invalid_rule_is_400_naming_the_field_and_stores_nothing(client, api_keys):
    response = client.post(
        "/api/v2/rules/",
        {**RULE, "match_type": "regex", "match_string": "(x"},
        content_type="application/json",
        **auth(api_keys["write"]),
    )
    assert response.status_code == 400
    assert "RE2" in response.json()["errors"]["match_string"][0]
    assert AlertRule.objects.count() == 0


def test_serializer_errors_name_the_field(client, api_keys):
    response = client.post(
        "/api/v2/rules/",
        {**RULE, "priority": "soon"},
        content_type="application/json",
        **auth(api_keys["write"]),
    )
    assert response.status_code == 400
    assert "priority" in response.json()["errors"]


def test_patch_records_old_and_new_values_and_history_endpoint_shows_them(client, api_keys):
    rule = services.create(AlertRule, actor=Actor.system("seed"), name="r", match_type="contains", match_string="a")
    response = client.patch(
        f"/api/v2/rules/{rule.pk}/",
        {"priority": 3, "reason": "escalate"},
        content_type="application/json",
        **auth(api_keys["write"]),
    )
    assert response.status_code == 200
    history = client.get(f"/api/v2/rules/{rule.pk}/history/", **auth(api_keys["read"])).json()["results"]
    assert history[0]["actor"] == "apikey:write-key"
    assert history[0]["reason"] == "escalate"
    assert {"field": "priority", "old": 100, "new": 3} in history[0]["changes"]
    assert history[1]["actor"] == "system:seed"


def test_delete_takes_its_reason_from_a_header(client, api_keys):
    host = services.create(DevHost, actor=Actor.system("seed"), hostname="lab-1")
    response = client.delete(
        f"/api/v2/dev-hosts/{host.pk}/", HTTP_X_CHANGE_REASON="decommissioned", **auth(api_keys["write"])
    )
    assert response.status_code == 204
    record = DevHost.history.get(history_type="-")
    assert (record.history_actor, record.history_change_reason) == ("apikey:write-key", "decommissioned")


def test_duplicate_hostname_in_other_case_is_400(client, api_keys):
    services.create(DevHost, actor=Actor.system("seed"), hostname="lab-1")
    response = client.post(
        "/api/v2/dev-hosts/",
        {"hostname": "LAB-1"},
        content_type="application/json",
        **auth(api_keys["write"]),
    )
    assert response.status_code == 400
    assert "hostname" in response.json()["errors"]


def test_list_filters(client, api_keys):
    services.create(AlertRule, actor=Actor.system("s"), name="a", match_type="regex", match_string="x+")
    services.create(AlertRule, actor=Actor.system("s"), name="b", match_type="contains", match_string="y")
    body = client.get("/api/v2/rules/?match_type=regex", **auth(api_keys["read"])).json()
    assert [r["name"] for r in body["results"]] == ["a"]
    body = client.get("/api/v2/rules/?q=y", **auth(api_keys["read"])).json()
    assert [r["name"] for r in body["results"]] == ["b"]


def test_unsupported_version_is_refused_clearly(client, api_keys):
    response = client.get("/api/v3/rules/", **auth(api_keys["read"]))
    assert response.status_code == 404
    assert "not supported" in response.json()["detail"]


def test_rules_are_not_part_of_the_legacy_v1_api(client, api_keys):
    response = client.get("/api/v1/rules/", **auth(api_keys["read"]))
    assert response.status_code == 404
    assert "/api/v2/" in response.json()["detail"]
    assert response["X-API-Version"] == "v1"
    assert response["Deprecation"] == "true"
    assert "Sunset" in response


def test_staff_session_can_read_and_superuser_can_write(admin_client_alice):
    response = admin_client_alice.post("/api/v2/rules/", RULE, content_type="application/json")
    assert response.status_code == 201
    record = AlertRule.objects.get().history.get()
    assert record.history_actor == "user:alice"


def test_openapi_schema_is_served(client, api_keys):
    response = client.get("/api/v2/schema/", **auth(api_keys["read"]))
    assert response.status_code == 200
    assert b"/api/{version}/rules/" in response.content or b"/api/v2/rules/" in response.content


def test_key_material_never_appears_in_history_or_responses(client, api_keys):
    key = ApiKey.objects.get(name="write-key")
    history_values = list(key.history.values())
    assert history_values
    assert all("key_hash" not in row for row in history_values)
    assert api_keys["write"] not in str(history_values)
    body = client.get("/api/v2/rules/", **auth(api_keys["write"])).content.decode()
    assert api_keys["write"] not in body
