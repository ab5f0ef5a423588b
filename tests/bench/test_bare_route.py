"""The benchmark's ceiling route takes the same way around the CSP as ingest, so the two compare alike."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from benchmarks import settings as bench_settings
from benchmarks.urls import BARE_PATH
from mutt_project import settings as mutt_settings

pytestmark = pytest.mark.django_db

# What the benchmark's settings module changes from MUTT's, applied over the test settings.
BENCH_CHANGES = {
    name: getattr(bench_settings, name)
    for name in dir(bench_settings)
    if name.isupper() and getattr(mutt_settings, name, object()) != getattr(bench_settings, name)
}


@override_settings(**BENCH_CHANGES)
def test_the_bare_route_skips_the_policy_like_ingest(client, api_keys):
    event = json.dumps({"hostname": "rtr-1", "message": "link down"})
    bare = client.post(BARE_PATH, event, content_type="application/json")
    assert bare.status_code == 202
    ingest = client.post("/api/v2/ingest", event, content_type="application/json", HTTP_X_API_KEY=api_keys["ingest"])
    assert ingest.status_code == 202
    assert "Content-Security-Policy" not in ingest
    assert "Content-Security-Policy" not in bare
    # Every other page keeps its policy under the benchmark's settings.
    assert "Content-Security-Policy" in client.get("/api/v2/")


def test_mutt_itself_keeps_the_policy_on_every_page_but_ingest(client):
    assert "Content-Security-Policy" in client.get("/api/v2/")
    assert "Content-Security-Policy" in client.post(BARE_PATH, "{}", content_type="application/json")  # a 404
