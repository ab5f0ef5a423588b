"""HTTPS deployment settings come from the environment, and every browser page carries a CSP the admin obeys."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import reverse

from configcenter.models import DynamicSetting

BASE_DIR = Path(__file__).resolve().parents[2]
FOUR = ("security.W004", "security.W008", "security.W012", "security.W016")
HTTPS_ENV = {
    "MUTT_HSTS_SECONDS": "31536000",
    "MUTT_SSL_REDIRECT": "true",
    "MUTT_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    "MUTT_SECURE_COOKIES": "true",
}


def check_deploy(tmp_path: Path, extra: dict[str, str]) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "MUTT_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/mutt",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "MUTT_SECRET_KEY": secrets.token_urlsafe(50),
        **extra,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_check_deploy_is_clean_of_the_https_warnings_when_the_variables_are_set(tmp_path):
    plain = check_deploy(tmp_path, {})
    assert all(warning in plain for warning in FOUR), plain  # the defaults serve plain HTTP on localhost
    https = check_deploy(tmp_path, HTTPS_ENV)
    assert not [warning for warning in FOUR if warning in https], https


def test_a_malformed_proxy_header_stops_start_up_with_its_name(tmp_path):
    output = check_deploy(tmp_path, {"MUTT_PROXY_SSL_HEADER": "https"})
    assert "MUTT_PROXY_SSL_HEADER='https' is not of the form 'Header-Name: value'" in output


@pytest.mark.django_db
def test_behind_a_tls_proxy_plain_requests_are_redirected_and_https_ones_get_hsts(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    plain = client.get("/admin/login/")
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/admin/login/"
    secure = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=3600"
    # Local probes and scrapers speak plain HTTP and must not read a redirect as "down".
    assert client.get("/healthz").status_code == 200


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            if named.get("src"):
                self.sources.append(named["src"] or "")
            elif named.get("type") != "application/json":  # data, never executed
                self._in_inline = True

    def handle_endtag(self, tag: str) -> None:
        self._in_inline = False

    def handle_data(self, data: str) -> None:
        if self._in_inline and data.strip():
            self.inline.append(data)


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.django_db
def test_the_admin_change_page_loads_its_scripts_under_the_policy(admin_client_alice):
    row = DynamicSetting.objects.get(key="moog_timeout")
    response = admin_client_alice.get(reverse("admin:configcenter_dynamicsetting_change", args=[row.pk]))
    assert response.status_code == 200
    csp = policy(response)
    assert csp["script-src"] == ["'self'"]
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    scripts = _Scripts()
    scripts.feed(response.content.decode())
    assert scripts.sources, "the change page loads the admin's scripts"
    assert not scripts.inline, "an inline script would be blocked by script-src 'self'"
    assert not scripts.handlers
    for src in scripts.sources:
        assert re.match(r"^/(static|admin)/", src), src  # this origin: allowed by 'self'
        assert admin_client_alice.get(src).status_code == 200, src


@pytest.mark.django_db
def test_api_responses_and_the_docs_carry_the_policy(client, api_keys):
    api = client.get("/api/v2/rules/", HTTP_X_API_KEY=api_keys["read"])
    assert policy(api)["script-src"] == ["'self'"]
    docs = client.get("/api/v2/docs/")
    assert docs.status_code == 200
    csp = policy(docs)
    assert csp["script-src"] == ["'self'"], "Swagger UI comes from this origin, no CDN"
    for directive, sources in csp.items():
        assert not any(source.startswith(("http:", "https:")) for source in sources), (directive, sources)
    scripts = _Scripts()
    scripts.feed(docs.content.decode())
    assert not scripts.inline, "the docs page starts Swagger UI from a script file, not inline"
    assert len(scripts.sources) == 3, scripts.sources  # the bundle, the preset and the start script
    links = re.findall(r'<link[^>]+href="([^"]+)"', docs.content.decode())
    for src in scripts.sources + links:
        assert src.startswith("/"), f"{src} is not served by this origin"
        served = client.get(src)
        assert served.status_code == 200, src
        assert b"".join(served.streaming_content if served.streaming else [served.content]), src


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v2/ingest", "/api/v1/ingest/", "/ingest"])
def test_with_the_ssl_redirect_plain_http_ingest_is_refused_with_a_clear_answer_not_redirected(
    client, settings, api_keys, path
):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    body = '{"hostname": "rtr-1", "message": "link down"}'
    plain = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=api_keys["ingest"])
    # Senders such as rsyslog omhttp do not follow a redirect: it would drop the batch without a word.
    assert plain.status_code == 403
    assert "Location" not in plain
    detail = plain.json()["detail"]
    assert "HTTPS only" in detail
    assert f"https://testserver{path}" in detail
    secure = client.post(
        path, body, content_type="application/json", HTTP_X_API_KEY=api_keys["ingest"], HTTP_X_FORWARDED_PROTO="https"
    )
    assert secure.status_code == 202
    assert client.get("/api/v2/rules/").status_code == 301  # everything else is still redirected


@pytest.mark.django_db
def test_without_the_ssl_redirect_plain_http_ingest_is_accepted(client, api_keys):
    body = '{"hostname": "rtr-1", "message": "link down"}'
    response = client.post("/api/v2/ingest", body, content_type="application/json", HTTP_X_API_KEY=api_keys["ingest"])
    assert response.status_code == 202
