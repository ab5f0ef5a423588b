"""The first links an operator follows answer: the API root, the admin's "View site", the bare host."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_api_root_lists_every_endpoint_of_the_version(client):
    response = client.get("/api/v2/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["X-API-Version"] == "v2"
    links = response.json()
    for name in ("rules", "dev-hosts", "device-teams", "config", "secrets", "ingest", "schema", "docs"):
        assert links[name].startswith("http://testserver/api/v2/"), name
    # Every link leads somewhere: the resource answers (or asks for credentials), never a 404.
    for name in ("rules", "config", "schema"):
        assert client.get(links[name]).status_code in (200, 401, 403), name


def test_the_admins_view_site_link_leads_to_a_page_that_answers(admin_client_alice):
    page = admin_client_alice.get("/admin/").content.decode()
    assert 'href="/api/v2/"' in page
    assert admin_client_alice.get("/api/v2/", HTTP_ACCEPT="text/html").status_code == 200


def test_the_bare_host_redirects_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
