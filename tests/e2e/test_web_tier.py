"""The HTTP tier as `mutt up` runs it (real gunicorn, MUTT's config): hostile requests, logs, control socket."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from configcenter.services import create_api_key
from core.audit import Actor
from tests.support.events import make_event
from tests.support.faulty_urls import BOOM_PATH
from tests.support.gunicorn import get, post, raw_request, running_gunicorn

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


class SlowClients:
    """Connections that send a request head one header line every ``interval`` seconds (slowloris)."""

    def __init__(self, port: int, count: int, interval: float = 2.0) -> None:
        self.port, self.count, self.interval = port, count, interval
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"POST /api/v2/ingest HTTP/1.1\r\nHost: mutt\r\n")
            self.sockets.append(sock)
        self.thread.start()
        return self

    def _run(self) -> None:
        line = 0
        while not self.stop.wait(self.interval):
            line += 1
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # the server may hang up on a slow client: its right
                    sock.sendall(f"X-Slow-{line}: 1\r\n".encode())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


def _timed(call) -> tuple[int, float]:
    started = time.monotonic()
    status = call()
    return status, time.monotonic() - started


@pytest.mark.usefixtures("clean_pipeline")
def test_slow_clients_do_not_stop_the_http_tier_answering(child_env, tmp_path):
    _, api_key = create_api_key(actor=Actor.cli("ops"), name="slow-test", scopes=["ingest"], reason="slow client test")
    with running_gunicorn(child_env, tmp_path / "gunicorn.log", workers=2) as server:

        def ingest() -> int:
            body = json.dumps([make_event()]).encode()
            headers = {"Content-Type": "application/json", "X-API-Key": api_key}
            return post(f"{server.url}/api/v2/ingest", body, headers, timeout=5)

        with SlowClients(server.port, count=10):
            time.sleep(0.5)  # every slow connection has been taken in by now
            answers = []
            deadline = time.monotonic() + 9  # several header lines of every slow client
            while time.monotonic() < deadline:
                answers.append(("healthz", *_timed(lambda: get(f"{server.url}/healthz", timeout=5)[0])))
                answers.append(("ingest", *_timed(ingest)))
                time.sleep(0.3)
    slow = [answer for answer in answers if answer[1] not in (200, 202) or answer[2] >= 1.0]
    assert slow == [], answers


@pytest.mark.parametrize("stall", ["head", "body"])
def test_a_request_read_past_its_deadline_is_cut_off(child_env, tmp_path, stall):
    env = {**child_env, "MUTT_HTTP_HEADER_TIMEOUT": "2", "MUTT_HTTP_BODY_TIMEOUT": "2"}
    with running_gunicorn(env, tmp_path / "gunicorn.log") as server:
        workers = server.worker_pids()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v2/ingest HTTP/1.1\r\nHost: mutt\r\nContent-Type: application/json\r\n")
            if stall == "body":
                sock.sendall(b"Content-Length: 100\r\n\r\n[")
            started = time.monotonic()
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while True:  # keep sending slowly: only the deadline can end this
                    with contextlib.suppress(TimeoutError):
                        sock.settimeout(0.5)
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        answer += chunk
                    assert time.monotonic() - started < 6, "the server kept reading past the deadline"
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X-Slow: 1\r\n" if stall == "head" else b" ")
        assert server.worker_pids() == workers
        assert get(f"{server.url}/healthz")[0] == 200
    if stall == "body":
        assert answer.startswith(b"HTTP/1.1 400 "), answer  # ingest names what it got: a cut-off body
    assert f"the request {stall} took over 2 s" in server.log.read_text()


def test_a_dead_worker_is_replaced_without_metrics_folder(child_env, tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR (gunicorn run by hand), a worker's death must not end the master."""
    env = {key: value for key, value in child_env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    with running_gunicorn(env, tmp_path / "gunicorn.log") as server:
        (worker,) = server.worker_pids()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.worker_pids() in (set(), {worker}):
            assert server.process.poll() is None, server.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no new worker"
            time.sleep(0.2)
        assert get(f"{server.url}/healthz")[0] == 200
        assert server.process.poll() is None


def test_idle_connections_hold_no_thread(child_env, tmp_path):
    """Connections that send nothing wait in the poller: two threads still answer with ten of them open."""
    env = {**child_env, "MUTT_HTTP_THREADS": "2"}
    with running_gunicorn(env, tmp_path / "gunicorn.log") as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(10)]
        try:
            time.sleep(0.5)  # every idle connection has been accepted by now
            timings = [_timed(lambda: get(f"{server.url}/healthz", timeout=5)[0]) for _ in range(5)]
        finally:
            for sock in idle:
                sock.close()
    assert all(status == 200 and seconds < 1.0 for status, seconds in timings), timings
