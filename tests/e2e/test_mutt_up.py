"""`python manage.py mutt up` as a real process: serves the admin, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from mutt_project import embedded, instance
from tests.support.waiting import wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every `mutt up` a test started, with its data folder: a failing test must not leave them running.
_launched: list[tuple[subprocess.Popen, Path]] = []


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    while _launched:
        process, data_dir = _launched.pop()
        if process.poll() is None:
            # Its children run in sessions of their own: kill them first, while they are still its children.
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            process.kill()
            process.wait(timeout=10)
        embedded.stop(data_dir)


def start_up(
    env: dict[str, str], port: int, log: Path, mock_port: int | None = None, args: tuple[str, ...] = ()
) -> subprocess.Popen:
    handle = log.open("a")
    mock_port = mock_port or free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mutt", "up", "--port", str(port), *args],
        cwd=BASE_DIR,
        env={
            **env,
            "MUTT_HTTP_WORKERS": "2",
            "MUTT_LOG_FORMAT": "plain",
            "MUTT_ALERTER_METRICS_PORT": "0",
            "MUTT_FORWARDER_METRICS_PORT": "0",
            "MUTT_REMEDIATION_METRICS_PORT": "0",
            "MUTT_MOCK_MOOG_PORT": str(mock_port),
        },
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    _launched.append((process, Path(env["MUTT_DATA_DIR"])))
    return process


def wait_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mutt up exited early:\n{log.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200 and "MUTT is up." in log.read_text():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"mutt up was not ready in {timeout}s:\n{log.read_text()[-4000:]}")


def descendants(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def stop_and_check_nothing_left(process: subprocess.Popen, sig: signal.Signals, pids: list[int]) -> None:
    process.send_signal(sig)
    assert process.wait(timeout=90) == 0
    time.sleep(0.2)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left behind: {alive}"


def admin_login(url: str, username: str, password: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{url}/admin/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(f"{url}/admin/login/", data=form, headers={"Referer": f"{url}/admin/login/"})
    opener.open(request).read()
    return opener.open(f"{url}/admin/rules/alertrule/").read().decode()


def wait_for_audit(data_dir: Path, event_id: str, timeout: float = 30) -> bool:
    """Poll the embedded database of ``data_dir`` for the event's audit row (matched by a sample rule)."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = psycopg2.connect(dbname="mutt", user="postgres", host=str(embedded.pg_socket_dir(data_dir)))
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT handling FROM rules_eventauditlog WHERE event_id = %s", [event_id])
                row = cursor.fetchone()
        finally:
            conn.close()
        if row is not None:
            return row[0] == "page_and_ticket"
        time.sleep(0.2)
    return False


def wait_for_moog(mock_port: int, event_id: str, timeout: float = 30) -> bool:
    """Poll mock_moog's recorded events for the alert of ``event_id`` (delivered by the forwarder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mock_port}/events", timeout=2) as response:
                recorded = json.load(response)["events"]
        except OSError:
            recorded = []
        if any(r["event"]["custom_info"]["event_id"] == event_id for r in recorded):
            return True
        time.sleep(0.2)
    return False


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    # Nested under this run's prefix, so the end-of-run cleanup removes its keys too.
    return {**env, "MUTT_DATA_DIR": str(data_dir), "MUTT_REDIS_PREFIX": f"{settings.MUTT_REDIS_PREFIX}:e2e"}


@pytest.mark.timeout(400)
def test_mutt_up_serves_the_admin_and_stops_cleanly_on_ctrl_c_and_sigterm(tmp_path, private_tmp):
    data_dir = private_tmp / "data"
    port = free_port()
    mock_port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = embedded_env(data_dir)

    process = start_up(env, port, log, mock_port)
    wait_ready(process, url, log)
    credentials = json.loads((data_dir / "credentials.json").read_text())
    assert (data_dir / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert credentials["http_url"] == url
    printed = log.read_text()
    secrets = [credentials["admin_password"], credentials["api_key"], credentials["ingest_api_key"]]
    assert not [secret for secret in secrets if secret in printed], "no secret is printed (it would be logged)"
    assert f"{data_dir / 'credentials.json'}" in printed, "the operator is told where the credentials are"
    changelist = admin_login(url, credentials["admin_username"], credentials["admin_password"])
    assert "Interface down" in changelist, "the sample rules are listed in the admin"
    request = urllib.request.Request(f"{url}/api/v2/rules/", headers={"X-API-Key": credentials["api_key"]})
    assert json.load(urllib.request.urlopen(request))["count"] > 0
    with urllib.request.urlopen(f"{url}/static/admin/css/base.css") as response:
        assert response.status == 200, "the admin is styled (static files served by gunicorn)"
        assert "text/css" in response.headers["Content-Type"]
    with urllib.request.urlopen(f"{url}/metrics") as response:
        assert response.status == 200
        assert "text/plain" in response.headers["Content-Type"]

    # An event posted to ingest over real HTTP reaches the audit log through the supervised alerter.
    event = {"hostname": "core-rtr-01", "message": "%LINK-3-UPDOWN: Interface Gi0/3, changed state to down"}
    ingest = urllib.request.Request(
        f"{url}/api/v2/ingest", data=json.dumps(event).encode(), method="POST",
        headers={"X-API-Key": credentials["ingest_api_key"], "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(ingest) as response:
        assert response.status == 202
        event_id = json.load(response)["event_ids"][0]
    assert wait_for_audit(data_dir, event_id), "the event never reached the audit log"
    assert wait_for_moog(mock_port, event_id), "the alert never reached mock_moog"
    # The supervised django-q2 cluster ran the schedule `migrate` made (its scheduler looks every 30 s):
    # the audit log's partitions (the alerter makes none).
    commands = [" ".join(psutil.Process(pid).cmdline()) for pid in descendants(process.pid)]
    assert any(command.endswith("manage.py qcluster") for command in commands), commands
    ran = wait_for(lambda: "job audit_partitions " in log.read_text(), timeout=60, interval=0.5)
    assert ran, log.read_text()[-3000:]
    # Counted by the cluster's worker in Redis, exported by the web tier's /metrics (gunicorn's multiprocess mode).
    with urllib.request.urlopen(f"{url}/metrics") as response:
        exported = response.read().decode()
    assert re.search(r'mutt_job_runs_total\{job="audit_partitions",outcome="(done|idle)"\} 1\.0', exported), exported
    assert 'mutt_job_last_success_timestamp_seconds{job="audit_partitions"}' in exported

    pids = [
        *descendants(process.pid),
        embedded._postmaster_pid(data_dir / "pg"),
        embedded._redis_pid(data_dir),
    ]
    assert None not in pids
    stop_and_check_nothing_left(process, signal.SIGINT, pids)

    # A second run reuses the database: same credentials, no duplicate sample data. Asked to show the
    # credentials while its output goes to a file (not a terminal), it still does not.
    log = tmp_path / "up-again.log"
    process = start_up(env, port, log, args=("--show-credentials",))
    wait_ready(process, url, log)
    printed = log.read_text()
    assert not [secret for secret in secrets if secret in printed], "--show-credentials only on a terminal"
    assert "not a terminal" in printed
    assert json.loads((data_dir / "credentials.json").read_text())["admin_password"] == credentials["admin_password"]
    request = urllib.request.Request(f"{url}/api/v2/rules/", headers={"X-API-Key": credentials["api_key"]})
    assert json.load(urllib.request.urlopen(request))["count"] == 7
    pids = [
        *descendants(process.pid),
        embedded._postmaster_pid(data_dir / "pg"),
        embedded._redis_pid(data_dir),
    ]
    stop_and_check_nothing_left(process, signal.SIGTERM, pids)


@pytest.mark.timeout(300)
def test_with_urls_set_mutt_up_starts_nothing_embedded(tmp_path, django_db_blocker):
    """Point mutt up at the servers this test run already uses, in a fresh database of its own."""
    import psycopg2
    from django.db import connection

    params = connection.settings_dict
    dbname = f"mutt_up_{uuid.uuid4().hex[:8]}"
    admin_conn = psycopg2.connect(
        dbname="postgres",
        user=params["USER"],
        password=params["PASSWORD"],
        host=params["HOST"],
        port=params["PORT"] or None,
    )
    admin_conn.autocommit = True
    with admin_conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    host = urllib.parse.quote(params["HOST"], safe="")
    if params["HOST"].startswith("/"):
        database_url = f"postgres://{params['USER']}@/{dbname}?host={host}"
    else:
        database_url = f"postgres://{params['USER']}@{params['HOST']}:{params['PORT'] or 5432}/{dbname}"
    data_dir = tmp_path / "data"
    env = {**embedded_env(data_dir), "DATABASE_URL": database_url, "REDIS_URL": settings.REDIS_URL}
    port = free_port()
    log = tmp_path / "up.log"
    process = start_up(env, port, log)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", log)
        assert not (data_dir / "pg").exists()
        assert not (data_dir / "redis").exists()
        assert "Starting embedded services" not in log.read_text()
        pids = descendants(process.pid)
        stop_and_check_nothing_left(process, signal.SIGTERM, pids)
        assert (data_dir / "up.lock").read_text() == "", "a clean stop leaves no record behind"
    finally:
        if process.poll() is None:
            process.kill()
        with admin_conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin_conn.close()


def healthy(url: str, path: str = "/healthz") -> bool:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def alive(pid: int | None) -> bool:
    return pid is not None and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def manage(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a management command to its end; one still running after ``timeout`` is killed with all it
    started (its children have sessions of their own) and fails the test."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"`manage.py {' '.join(args)}` still ran after {timeout}s:\n{stdout[-3000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.timeout(300)
def test_a_second_mutt_up_on_the_same_folder_refuses_at_once_and_leaves_the_first_alone(tmp_path, private_tmp):
    data_dir = private_tmp / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = embedded_env(data_dir)
    first = start_up(env, port, log)
    try:
        wait_ready(first, url, log)
        postmaster, redis_pid = embedded._postmaster_pid(data_dir / "pg"), embedded._redis_pid(data_dir)

        second_port = free_port()
        started = time.monotonic()
        second = manage(
            {**env, "MUTT_LOG_FORMAT": "plain", "MUTT_MOCK_MOOG_PORT": str(free_port())},
            "mutt", "up", "--port", str(second_port),
        )  # fmt: skip
        assert second.returncode != 0, f"the second mutt up did not refuse:\n{second.stdout[-3000:]}"
        assert time.monotonic() - started < 20, "it refuses at once, without starting anything"
        message = second.stdout + second.stderr
        assert "already running" in message
        assert f"pid {first.pid}" in message, f"the running instance is named: {message}"
        assert url in message
        assert "MUTT is up." not in message
        assert not healthy(f"http://127.0.0.1:{second_port}"), "the second one serves nothing"

        # `mutt services stop` must not pull the services from under the running instance either.
        stop = manage(env, "mutt", "services", "stop")
        assert stop.returncode != 0
        assert f"pid {first.pid}" in stop.stderr

        assert first.poll() is None
        assert healthy(url, "/healthz")
        assert healthy(url, "/readyz")
        assert embedded._postmaster_pid(data_dir / "pg") == postmaster
        assert alive(postmaster)
        assert embedded._redis_pid(data_dir) == redis_pid
        assert alive(redis_pid)
        pids = [*descendants(first.pid), postmaster, redis_pid]
        # A closed terminal or SSH session: a clean stop, as Ctrl-C.
        stop_and_check_nothing_left(first, signal.SIGHUP, pids)
    finally:
        embedded.stop(data_dir)  # (the autouse fixture kills a `mutt up` left running, with its children)


@pytest.mark.timeout(300)
def test_mutt_up_never_stops_embedded_services_it_did_not_start(tmp_path, private_tmp):
    data_dir = private_tmp / "data"
    env = embedded_env(data_dir)
    started = manage(env, "mutt", "services", "start", timeout=120)
    assert started.returncode == 0, started.stderr
    postmaster, redis_pid = embedded._postmaster_pid(data_dir / "pg"), embedded._redis_pid(data_dir)
    try:
        port = free_port()
        log = tmp_path / "up.log"
        process = start_up(env, port, log)
        wait_ready(process, f"http://127.0.0.1:{port}", log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
        assert alive(postmaster), "the PostgreSQL `mutt services start` started is still running"
        assert alive(redis_pid), "the Redis `mutt services start` started is still running"
        assert "Left running" in log.read_text()
        assert embedded.status(data_dir)["postgres"]["running"]
        assert embedded.status(data_dir)["redis"]["running"]
    finally:
        embedded.stop(data_dir)


def wait_restarted(url: str, pid_of, old_pid: int, timeout: float = 45) -> int:
    """Wait until a new server process replaced ``old_pid`` and ``/readyz`` says ready again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = pid_of()
        if pid is not None and pid != old_pid and alive(pid) and healthy(url, "/readyz"):
            return pid
        time.sleep(0.2)
    raise AssertionError(f"not restarted within {timeout}s")


def post_event(url: str, key: str, event: dict) -> str:
    request = urllib.request.Request(
        f"{url}/api/v2/ingest", data=json.dumps(event).encode(), method="POST",
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.load(response)["event_ids"][0]


@pytest.mark.timeout(300)
def test_mutt_up_restarts_a_killed_embedded_redis_and_postgresql(tmp_path, private_tmp):
    data_dir = private_tmp / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    process = start_up(embedded_env(data_dir), port, log)
    try:
        wait_ready(process, url, log)
        key = json.loads((data_dir / "credentials.json").read_text())["ingest_api_key"]
        event = {"hostname": "core-rtr-01", "message": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down"}

        old_redis = embedded._redis_pid(data_dir)
        psutil.Process(old_redis).kill()
        new_redis = wait_restarted(url, lambda: embedded._redis_pid(data_dir), old_redis)
        assert wait_for_audit(data_dir, post_event(url, key, event)), "the pipeline works after Redis came back"

        old_postmaster = embedded._postmaster_pid(data_dir / "pg")
        psutil.Process(old_postmaster).kill()
        postmaster_of = lambda: embedded._postmaster_pid(data_dir / "pg")  # noqa: E731
        new_postmaster = wait_restarted(url, postmaster_of, old_postmaster)
        assert wait_for_audit(data_dir, post_event(url, key, event)), "the pipeline works after PostgreSQL came back"

        assert "embedded redis is down" in log.read_text()
        # Said once the start has returned, which can be a moment after PostgreSQL already answers (CI
        # once read the log 50 ms before the line): wait for it rather than read once.
        assert wait_for(lambda: "embedded postgres restarted" in log.read_text(), timeout=30), log.read_text()[-3000:]
        # The restarted servers are this instance's: it stops them on exit.
        stop_and_check_nothing_left(process, signal.SIGTERM, [*descendants(process.pid), new_redis, new_postmaster])
    finally:
        embedded.stop(data_dir)  # (the autouse fixture kills a `mutt up` left running, with its children)


@pytest.mark.timeout(120)
def test_mutt_up_refuses_a_port_another_program_listens_on(private_tmp):
    data_dir = private_tmp / "data"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        started = time.monotonic()
        env = {**embedded_env(data_dir), "MUTT_MOCK_MOOG_PORT": str(free_port())}
        result = manage(env, "mutt", "up", "--port", str(port))
    assert result.returncode != 0
    assert time.monotonic() - started < 20, "refused before starting anything"
    assert f"http://127.0.0.1:{port} is already in use" in result.stderr
    assert "MUTT is up." not in result.stdout
    assert not (data_dir / "pg").exists()
    assert "another data folder" in result.stderr

    # When the last `mutt up` on this folder was killed, its processes are the likely listeners: say so.
    gone = subprocess.Popen(["true"])
    gone.wait()
    (data_dir / "up.lock").write_text(json.dumps({"pid": gone.pid, "http_url": f"http://127.0.0.1:{port}"}))
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = manage(env, "mutt", "up", "--port", str(port))
    assert result.returncode != 0
    assert f"the last mutt up on this data folder (pid {gone.pid}) did not stop cleanly" in result.stderr


@pytest.mark.timeout(300)
def test_after_a_killed_mutt_up_the_next_one_starts_and_stops_the_servers_it_left(tmp_path, private_tmp):
    data_dir = private_tmp / "data"
    env = embedded_env(data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    killed = start_up(env, port, log)
    wait_ready(killed, url, log)
    postmaster, redis_pid = embedded._postmaster_pid(data_dir / "pg"), embedded._redis_pid(data_dir)
    children = descendants(killed.pid)
    # SIGKILL (or the OOM killer) gives it no chance to stop anything: its children stop by themselves,
    # the daemonised servers survive it.
    killed.kill()
    killed.wait(timeout=10)
    deadline = time.monotonic() + 30
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in children if alive(pid)] == [], "children of the killed mutt up still run"
    assert alive(postmaster)
    assert alive(redis_pid)

    log = tmp_path / "up-next.log"
    process = start_up(env, port, log)
    wait_ready(process, url, log)
    assert embedded._postmaster_pid(data_dir / "pg") == postmaster, "the running servers are reused"
    stop_and_check_nothing_left(process, signal.SIGTERM, [*descendants(process.pid), postmaster, redis_pid])
    assert "Left running" not in log.read_text()


@pytest.mark.timeout(120)
def test_a_mutt_up_whose_services_do_not_start_keeps_the_record_of_a_killed_one(private_tmp):
    """What a killed `mutt up` left running stays on record until a later one has decided about it."""
    data_dir = private_tmp / "data"
    data_dir.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = {"pid": gone.pid, "http_url": "http://127.0.0.1:1", "redis_pid": 4242}
    (data_dir / "up.lock").write_text(json.dumps(left))
    (data_dir / "redis").write_text("not a folder: the embedded Redis cannot start")
    env = {**embedded_env(data_dir), "MUTT_MOCK_MOOG_PORT": str(free_port())}
    if "DATABASE_URL" in os.environ:  # only Redis embedded: fails within seconds
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    result = manage(env, "mutt", "up", "--port", str(free_port()), timeout=90)
    assert result.returncode != 0
    assert "MUTT is up." not in result.stdout
    record = instance._parse((data_dir / "up.lock").read_bytes())
    assert record is not None
    assert record["redis_pid"] == 4242, "the record survived"
