"""Gunicorn's access log, as `mutt up` runs it: every request but accepted ingest ones, unless asked."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from configcenter.services import create_api_key
from core.audit import Actor
from tests.support.events import make_event

BASE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    call = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # not listening yet
        return 0


def serve_and_log(env: dict[str, str], log: Path, api_key: str) -> dict[str, int]:
    """Start gunicorn with MUTT's config, make three requests, stop it; their statuses."""
    port = free_port()
    with log.open("w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "mutt_project/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=BASE_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while request(f"{url}/healthz") != 200:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        body = json.dumps([make_event()]).encode()
        json_type = {"Content-Type": "application/json"}
        statuses = {
            "accepted": request(f"{url}/api/v2/ingest", body, {**json_type, "X-API-Key": api_key}),
            "refused": request(f"{url}/api/v2/ingest", body, json_type),
            "health": request(f"{url}/healthz"),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return statuses


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_accepted", [False, True], ids=["default", "MUTT_ACCESS_LOG_INGEST"])
def test_accepted_ingest_requests_are_not_access_logged_unless_asked(child_env, clean_pipeline, tmp_path, log_accepted):
    _, api_key = create_api_key(
        actor=Actor.cli("ops"), name=f"log-test-{log_accepted}", scopes=["ingest"], reason="access log test"
    )
    env = {**child_env, "MUTT_ACCESS_LOG_INGEST": "true" if log_accepted else "false"}
    log = tmp_path / "gunicorn.log"
    assert serve_and_log(env, log, api_key) == {"accepted": 202, "refused": 401, "health": 200}
    lines = log.read_text().splitlines()
    accepted = [line for line in lines if '"POST /api/v2/ingest HTTP/1.1" 202' in line]
    assert len(accepted) == (1 if log_accepted else 0), lines
    assert any('"POST /api/v2/ingest HTTP/1.1" 401' in line for line in lines), "a refused request is logged"
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in lines), "other requests are logged"
