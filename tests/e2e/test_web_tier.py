"""The HTTP tier as `mutt up` runs it (real gunicorn, MUTT's config): hostile requests, logs, control socket."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.faulty_urls import BOOM_PATH
from tests.support.gunicorn import get, raw_request, running_gunicorn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

MALFORMED = {
    "length-not-a-number": b"Content-Length: abc\r\n",
    "length-negative": b"Content-Length: -1\r\n",
    "length-and-chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
}


def test_malformed_requests_get_400_and_the_worker_lives_on(child_env, tmp_path):
    with running_gunicorn(child_env, tmp_path / "gunicorn.log") as server:
        workers = server.worker_pids()
        for name, header in MALFORMED.items():
            for path in (b"/api/v2/ingest", b"/healthz", b"/admin/login/"):
                answer = raw_request(server.port, b"POST " + path + b" HTTP/1.1\r\nHost: mutt\r\n" + header + b"\r\n")
                assert answer.startswith(b"HTTP/1.1 400 "), (name, path, answer, server.log.read_text()[-3000:])
                assert server.worker_pids() == workers, (name, path, "a worker died", server.log.read_text()[-3000:])
                assert get(f"{server.url}/healthz")[0] == 200
    assert "Traceback" not in server.log.read_text()


def _request_ids(env: dict[str, str], log: Path) -> dict[str, str]:
    """Make a 404, a 500 and a malformed request against gunicorn; the request id each response carried."""
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.support.faulty_settings"}
    with running_gunicorn(env, log) as server:
        not_found = get(f"{server.url}/api/v2/no-such-thing")
        failed = get(f"{server.url}{BOOM_PATH}")
        malformed = raw_request(server.port, b"POST /api/v2/ingest HTTP/1.1\r\nHost: mutt\r\nContent-Length: x\r\n\r\n")
        assert (not_found[0], failed[0], malformed[:12]) == (404, 500, b"HTTP/1.1 400")
    return {"404": not_found[1]["X-Request-ID"], "500": failed[1]["X-Request-ID"]}


def test_every_log_line_is_json_and_carries_the_request_id_of_its_response(child_env, tmp_path):
    log = tmp_path / "gunicorn.log"
    ids = _request_ids({**child_env, "MUTT_LOG_FORMAT": "json"}, log)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line is JSON
    assert all({"ts", "level", "logger", "msg", "request_id"} <= line.keys() for line in lines), lines

    def of(logger: str, request_id: str) -> list[dict]:
        return [line for line in lines if line["logger"] == logger and line["request_id"] == request_id]

    assert [line["status_code"] for line in of("django.request", ids["404"])] == [404], lines
    assert [line["status"] for line in of("gunicorn.access", ids["404"])] == [404], lines
    (traceback,) = of("django.request", ids["500"])
    assert traceback["level"] == "ERROR"
    assert "RuntimeError: boom" in traceback["exc"], traceback
    assert [line["status"] for line in of("gunicorn.access", ids["500"])] == [500], lines
    # gunicorn refused the malformed request before MUTT saw it: no response id, its lines say "-".
    assert [line["status"] for line in of("gunicorn.access", "-")] == [400], lines
    assert of("gunicorn.error", "-"), "gunicorn's own lines are JSON too"


def test_plain_log_lines_carry_the_request_id_of_their_response(child_env, tmp_path):
    log = tmp_path / "gunicorn.log"
    ids = _request_ids({**child_env, "MUTT_LOG_FORMAT": "plain"}, log)
    text = log.read_text()
    plain = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \[[^\]]+\] ")
    assert re.search(rf" WARNING django\.request \[{ids['404']}\] Not Found: ", text), text
    assert re.search(rf" ERROR django\.request \[{ids['500']}\] Internal Server Error: ", text), text
    for request_id in ids.values():
        assert re.search(rf" INFO gunicorn\.access \[{request_id}\] ", text), text
    assert all(plain.match(line) for line in text.splitlines() if line.startswith("20")), text


def test_the_control_socket_is_the_data_folders_not_the_users(child_env, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # Short folders: a Unix socket path must fit in 107 bytes.
    folders = [Path(tempfile.mkdtemp(prefix="mutt-ctl-", dir="/tmp")) for _ in range(2)]
    env = {**child_env, "HOME": str(home)}
    env.pop("XDG_RUNTIME_DIR", None)
    sockets = [folder / "gunicorn.ctl" for folder in folders]
    try:
        with running_gunicorn({**env, "MUTT_DATA_DIR": str(folders[0])}, tmp_path / "first.log"):
            with running_gunicorn({**env, "MUTT_DATA_DIR": str(folders[1])}, tmp_path / "second.log"):
                deadline = time.monotonic() + 15
                while not all(path.is_socket() for path in sockets) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert [path.is_socket() for path in sockets] == [True, True]
            assert sockets[0].is_socket(), "stopping the second instance left the first one's socket alone"
            assert not sockets[1].exists()
        assert list(home.rglob("*")) == [], "nothing of gunicorn's under $HOME"
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
