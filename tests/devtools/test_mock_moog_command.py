"""``manage.py mock_moog`` as a real process, and whether ``mutt up`` runs it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from delivery.destinations.moogsoft import is_local_mock
from mutt_project.management.commands.mutt import FOLLOW_FLAG, mock_moog_args

BASE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_records_and_exits_0_on_a_signal(child_env, sig):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mock_moog", "--port", str(port)],
        cwd=BASE_DIR,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None  # piped
    assert process.stderr is not None
    try:
        banner = process.stdout.readline()
        assert banner.strip() == f"mock_moog listening on http://127.0.0.1:{port}", process.stderr.read()
        url = f"http://127.0.0.1:{port}"
        body = json.dumps({"events": [{"signature": "rtr-1:1:", "source": "rtr-1"}]}).encode()
        request = urllib.request.Request(f"{url}/events", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert (response.status, json.load(response)) == (202, {"accepted": 1})
        with urllib.request.urlopen(f"{url}/events", timeout=5) as response:
            listing = json.load(response)
        assert listing["count"] == 1
        assert listing["events"][0]["event"]["source"] == "rtr-1"
        process.send_signal(sig)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_the_command_fails_clearly_when_the_port_is_taken(child_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "mock_moog", "--port", str(port)],
            cwd=BASE_DIR,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert f"mock_moog cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("moog_url", "local"),
    [
        ("", True),
        ("http://127.0.0.1:18080/events", True),
        ("http://localhost:18080", True),
        ("http://[::1]:18080/webhook", True),
        ("https://moog.example.com/events", False),
        ("http://127.0.0.1:9999/events", False),
        ("http://10.0.0.5:18080/events", False),
    ],
)
def test_is_local_mock(settings, moog_url, local):
    settings.MUTT_MOCK_MOOG_PORT = 18080
    assert is_local_mock(moog_url) is local


def mock_spec(specs):
    return next((spec for spec in specs if spec.name == "mock_moog"), None)


@pytest.mark.django_db(transaction=True)
def test_mutt_up_runs_mock_moog_unless_a_real_moogsoft_is_configured(settings):
    from mutt_project.management.commands.mutt import child_specs
    from tests.support.waiting import apply_setting

    port = str(settings.MUTT_MOCK_MOOG_PORT)
    assert mock_moog_args() == []
    spec = mock_spec(child_specs("127.0.0.1", 8000, 1))
    assert spec.argv[-5:] == ["mock_moog", "--host", "127.0.0.1", "--port", port]

    apply_setting("moog_url", f"http://localhost:{port}/events")
    assert mock_moog_args() == [], "moog_url naming the mock itself still runs it"

    apply_setting("moog_url", "https://moog.example.com/events")
    assert mock_moog_args() is None
    assert mock_spec(child_specs("127.0.0.1", 8000, 1)) is None


def test_before_the_embedded_services_start_the_mock_decides_later(settings, private_tmp):
    settings.MUTT_DATA_DIR = private_tmp  # nothing running there, as when `mutt up` starts afresh
    settings.MUTT_EMBEDDED_REDIS = True
    assert mock_moog_args() == [FOLLOW_FLAG]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


@pytest.mark.django_db(transaction=True)
def test_in_follow_mode_the_mock_serves_only_while_moog_url_is_local(child_env):
    from tests.support.waiting import apply_setting, wait_for

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        try:
            return get_json(f"{url}/health")["status"] == "ok"
        except OSError:
            return False

    apply_setting("moog_url", "https://moog.example.com/events")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mock_moog", "--port", str(port), FOLLOW_FLAG],
        cwd=BASE_DIR,
        env={**child_env, "MUTT_MOCK_MOOG_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert not wait_for(serving, timeout=3), "a real Moogsoft is configured: the mock stays quiet"
        apply_setting("moog_url", "")
        assert wait_for(serving, timeout=10)
        apply_setting("moog_url", "https://moog.example.com/events")
        assert wait_for(lambda: not serving(), timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
