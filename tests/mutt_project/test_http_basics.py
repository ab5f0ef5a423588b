"""Health and readiness, request ids and JSON logs."""

from __future__ import annotations

import json
import logging

import pytest

from core.context import request_id_scope
from core.logging import JsonFormatter, RequestIdFilter
from core.redis import reset_clients

pytestmark = pytest.mark.django_db


def test_healthz_answers_while_the_process_lives(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_redis_and_migrations(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert {c["name"]: c["ok"] for c in body["checks"]} == {
        "database": True,
        "redis": True,
        "migrations": True,
    }


def test_readyz_is_503_when_redis_is_unreachable(client, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/nothing-here.sock"
    reset_clients()
    try:
        response = client.get("/readyz")
    finally:
        reset_clients()
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["redis"]["ok"] is False
    assert "error" in checks["redis"]
    assert checks["database"]["ok"] is True


def test_every_response_carries_a_request_id(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert len(first) == 32
    assert first != second


def test_a_sane_incoming_request_id_is_kept_and_junk_is_replaced(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a-0001")["X-Request-ID"] == "lb-7f3a-0001"
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID="<script>")["X-Request-ID"]
    assert replaced != "<script>"
    assert len(replaced) == 32


def test_json_log_lines_carry_request_id_and_extra_fields():
    record = logging.LogRecord("mutt.test", logging.WARNING, __file__, 1, "queue at %d", (90,), None)
    record.queue = "ingest"
    with request_id_scope("rid-123456"):
        RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "queue at 90"
    assert line["request_id"] == "rid-123456"
    assert line["queue"] == "ingest"
    assert line["level"] == "WARNING"


def test_the_admin_stylesheets_are_served_without_debug(client, settings):
    assert settings.DEBUG is False
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
