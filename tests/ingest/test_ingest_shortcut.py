"""Ingest's short way through Django, and the Redis connections kept for the admission script."""

from __future__ import annotations

import os

import orjson
import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, override_settings

from core import streams
from ingest.middleware import IngestShortcutMiddleware
from ingest.views import ingest_view
from tests.ingest.helpers import event, post, stream_events

pytestmark = pytest.mark.django_db

SHORTCUT = "ingest.middleware.IngestShortcutMiddleware"
# Differ on every request by design.
PER_REQUEST_HEADERS = {"X-Request-ID", "X-Correlation-ID"}


def through_every_middleware(body, **kwargs):
    """The same request through a client (a handler) built without the shortcut."""
    with override_settings(MIDDLEWARE=[name for name in settings.MIDDLEWARE if name != SHORTCUT]):
        return post(Client(raise_request_exception=False), body, **kwargs)


def comparable(response) -> tuple[int, dict[str, str], dict]:
    headers = {name: value for name, value in response.items() if name not in PER_REQUEST_HEADERS}
    body = {k: v for k, v in response.json().items() if k not in ("event_ids", "correlation_id")}
    return response.status_code, headers, body


# --- the short way ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key_name", "body"),
    [
        ("/api/v2/ingest", "ingest", [event(0)]),
        ("/ingest/", "ingest", [event(0), {"hostname": "no message"}]),
        ("/api/v1/ingest", None, [event(0)]),
        ("/api/v9/ingest", "ingest", [event(0)]),
        ("/api/v2/ingest", "read", [event(0)]),
        ("/api/v2/ingest", "ingest", b"{oops"),
    ],
)
def test_ingest_answers_as_it_would_through_every_middleware(client, api_keys, path, key_name, body):
    key = api_keys[key_name] if key_name else None
    short = post(client, body, key=key, path=path)
    full = through_every_middleware(body, key=key, path=path)
    assert not hasattr(short.wsgi_request, "session")
    assert hasattr(full.wsgi_request, "session")
    assert comparable(short) == comparable(full)
    assert short["X-Frame-Options"] == "DENY"
    assert short["X-Content-Type-Options"] == "nosniff"
    assert short["Content-Length"] == str(len(short.content))


def test_an_unexpected_error_is_the_same_500_as_through_every_middleware(ingest_key, monkeypatch):
    from ingest import views

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "_handle", broken)
    client = Client(raise_request_exception=False)
    short = post(client, [event()], key=ingest_key)
    full = through_every_middleware([event()], key=ingest_key)
    assert short.status_code == full.status_code == 500
    assert {k: v for k, v in short.items() if k not in PER_REQUEST_HEADERS} == {
        k: v for k, v in full.items() if k not in PER_REQUEST_HEADERS
    }
    assert short["X-Frame-Options"] == "DENY"
    assert short.content == full.content


def test_ingest_requests_open_no_session_and_load_no_user(client, ingest_key):
    response = post(client, [event()], key=ingest_key)
    assert response.status_code == 202
    assert not hasattr(response.wsgi_request, "session")
    assert not hasattr(response.wsgi_request, "user")
    assert response.wsgi_request.resolver_match.func is ingest_view
    other = client.get("/healthz")
    assert hasattr(other.wsgi_request, "session")


def test_an_unknown_host_is_still_refused(client, ingest_key, redis_client):
    response = post(client, [event()], key=ingest_key, HTTP_HOST="ingest.attacker.example")
    assert response.status_code == 400
    assert stream_events(redis_client) == []


def test_only_paths_the_urlconf_gives_to_the_ingest_view_take_the_short_way():
    shortcut = IngestShortcutMiddleware(lambda request: HttpResponse())
    for path in ("/api/v2/ingest", "/api/v1/ingest/", "/api/v7/ingest", "/ingest", "/ingest/"):
        assert shortcut.ingest_route(path).func is ingest_view, path
    assert shortcut.ingest_route("/ingest").kwargs == {"version": "v1"}
    for path in ("/api/v2/rules/", "/admin/ingest", "/api/v2/ingest/x", "/healthz", "/nothing/ingest"):
        assert shortcut.ingest_route(path) is None, path


def test_paths_looked_up_are_remembered_within_a_bound():
    shortcut = IngestShortcutMiddleware(lambda request: HttpResponse())
    for n in range(1000):
        shortcut.ingest_route(f"/junk-{n}/ingest")
    assert len(shortcut._routes) <= 256
    assert shortcut.ingest_route("/api/v2/ingest").func is ingest_view


# --- the admission script's connections ---------------------------------------------------------


def test_a_script_connection_closed_by_redis_while_idle_is_reopened_without_a_refusal(client, ingest_key, redis_client):
    assert post(client, [event(0)], key=ingest_key).status_code == 202
    script_clients = [c for c in redis_client.client_list() if c["cmd"] == "evalsha"]
    assert script_clients
    for connection in script_clients:
        redis_client.client_kill_filter(_id=connection["id"])
    assert post(client, [event(1)], key=ingest_key).status_code == 202
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000", "edge-001"]


def test_a_script_redis_has_forgotten_is_loaded_again(client, ingest_key, redis_client):
    assert post(client, [event(0)], key=ingest_key).status_code == 202
    redis_client.script_flush()  # e.g. Redis restarted, or a failover to a replica without it
    assert post(client, [event(1)], key=ingest_key).status_code == 202
    assert [e["hostname"] for e in stream_events(redis_client)] == ["edge-000", "edge-001"]


def test_a_forked_child_does_not_share_the_parents_script_connection(client, ingest_key, redis_client):
    from core.redis import get_redis
    from ingest import ratelimit

    assert post(client, [event(0)], key=ingest_key).status_code == 202  # the parent now keeps a connection
    limits = ratelimit.Limits(global_rate=1000, key_rate=1000, max_depth=1000)
    pid = os.fork()
    if pid == 0:  # the child: enqueue through its own connection, then leave without pytest's teardown
        status = 1
        try:
            payloads = [orjson.dumps({"n": n}) for n in range(200)]
            admission = ratelimit.admit(get_redis(), rate_key="child", payloads=payloads, limits=limits)
            status = 0 if admission.outcome is ratelimit.Outcome.ACCEPTED else 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert post(client, [event(1)], key=ingest_key).status_code == 202
    assert redis_client.xlen(streams.ingest_stream()) == 202
