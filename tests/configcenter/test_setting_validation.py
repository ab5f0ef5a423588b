"""Every runtime setting refuses hostile values through the API with a 400 naming the field, never a 500."""

from __future__ import annotations

import pytest

from configcenter.models import DynamicSetting
from configcenter.registry import REGISTRY

pytestmark = pytest.mark.django_db
URL_KEYS = ["moog_health_url", "moog_url", "notify_webhook_url"]

HOSTILE = [
    "9" * 4300,  # int() of a 4,301-digit text raises ValueError
    "-" + "9" * 5000,
    10**400,  # a JSON number too large for a float
    "a\x00b",  # PostgreSQL's jsonb cannot store NUL
    "line\nbreak",
    "x" * 100_000,
    {"nested": 1},
]


def put(client, key, value, api_key):
    return client.put(
        f"/api/v2/config/{key}", {"value": value, "reason": "fuzz"}, content_type="application/json",
        HTTP_X_API_KEY=api_key,
    )  # fmt: skip


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_setting_refuses_hostile_values_with_a_400_naming_the_field(client, api_keys, key):
    for value in HOSTILE:
        response = put(client, key, value, api_keys["admin"])
        assert response.status_code == 400, (key, str(value)[:20], response.status_code)
        messages = response.json()["errors"]["value"]
        assert len(messages[0]) < 300, "the error must not echo a hostile value back"
    assert DynamicSetting.objects.get(key=key).value is None


@pytest.mark.parametrize("key", URL_KEYS)
@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "javascript:alert(1)", "ftp://moog.example.net/", "http://", "https:///events",
     "http://moog.example.net:99999/", "moog.example.net/events", "http://moog example.net/"],
)  # fmt: skip
def test_url_settings_need_http_or_https_with_a_host(client, api_keys, key, url):
    response = put(client, key, url, api_keys["admin"])
    assert response.status_code == 400
    assert response.json()["errors"]["value"]
    assert DynamicSetting.objects.get(key=key).value is None


@pytest.mark.parametrize("key", URL_KEYS)
def test_url_settings_accept_real_destinations_and_empty(client, api_keys, key):
    assert REGISTRY[key].type == "url"
    for url in ("https://moog.example.net/events/generic?token=x", "http://moog:8080/events", ""):
        response = put(client, key, url, api_keys["admin"])
        assert response.status_code == 200, url
        assert response.json()["value"] == url


def test_text_settings_are_bounded_and_the_bound_is_described(client, api_keys):
    row = client.get("/api/v2/config/unhandled_default_team", HTTP_X_API_KEY=api_keys["read"]).json()
    assert row["bounds"] == "at most 200 characters"
    assert put(client, "unhandled_default_team", "t" * 200, api_keys["admin"]).status_code == 200
    refused = put(client, "unhandled_default_team", "t" * 201, api_keys["admin"])
    assert refused.json()["errors"]["value"] == ["201 characters is above the maximum of 200"]


@pytest.mark.parametrize("key", URL_KEYS)
@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cr3t-pw@moog.example.net/events",
        "https://s3cr3t-pw@moog.example.net/",
        "http://:s3cr3t-pw@moog/",
    ],
)
def test_url_settings_refuse_credentials_and_point_to_the_secrets_store(client, api_keys, key, url):
    # Every read-scope key and session sees a setting's value: a password in it would be shown to them all.
    response = put(client, key, url, api_keys["admin"])
    assert response.status_code == 400
    message = response.json()["errors"]["value"][0]
    assert "user name or password" in message
    assert "docs/secrets.md" in message
    assert "s3cr3t-pw" not in message
    assert DynamicSetting.objects.get(key=key).value is None
