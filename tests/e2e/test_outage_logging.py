"""An outage of Redis or PostgreSQL writes one line per change of state in the worker processes, not one
traceback per retry: run_alerter and run_forwarder as real processes, a real redis-server stopped and
started again, a PostgreSQL that does not answer."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

BASE_DIR = Path(__file__).resolve().parents[2]


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", command, "--consumer", command],
            cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def text(log: Path) -> str:
    return log.read_text()


def lines(log: Path, needle: str) -> list[str]:
    return [line for line in text(log).splitlines() if needle in line]


def warnings_after_start(log: Path) -> list[str]:
    """The WARNING and ERROR lines written once the worker had started (plain format)."""
    output = text(log).splitlines()
    started = next(i for i, line in enumerate(output) if line.endswith(" started"))
    return [line for line in output[started:] if " WARNING " in line or " ERROR " in line]


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_a_redis_outage_is_one_line_when_it_starts_and_one_when_it_ends(child_env, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    env = {**child_env, "REDIS_URL": server.url, "MUTT_ALERTER_METRICS_PORT": "0", "MUTT_FORWARDER_METRICS_PORT": "0"}
    logs = {name: tmp_path / f"{name}.log" for name in ("run_alerter", "run_forwarder")}
    workers = [start(name, env, log) for name, log in logs.items()]
    try:
        for name, log in logs.items():
            assert wait_for(lambda log=log: "started" in text(log), timeout=60), f"{name}: {text(log)}"
        time.sleep(1)
        # Down for several retries of every loop (each retries about once a second), then back with its data.
        redis.Redis(unix_socket_path=str(server.socket)).shutdown(save=True)
        server.process.wait(timeout=10)
        time.sleep(5)
        server.start()
        for name, log in logs.items():
            assert wait_for(lambda log=log: "Redis available again" in text(log), timeout=30), f"{name}: {text(log)}"
        time.sleep(2)  # time for any line a retry in flight would still write
    finally:
        for worker in workers:
            stop(worker)
        server.stop()
    for name, log in logs.items():
        output = text(log)
        assert "Traceback" not in output, f"{name} logged a traceback for an outage:\n{output}"
        assert len(lines(log, "Redis unavailable")) == 1, f"{name}:\n{output}"
        assert warnings_after_start(log) == lines(log, "Redis unavailable"), f"nothing else for it:\n{output}"
        assert len(lines(log, "Redis available again")) == 1, f"{name}:\n{output}"
        assert "still unavailable" not in output, "no repeat line within the first minute"


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_an_alerter_started_while_postgresql_is_down_says_so_once(child_env, tmp_path):
    # A port nothing listens on: every connection attempt is refused at once.
    env = {**child_env, "DATABASE_URL": "postgres://postgres@127.0.0.1:9/mutt", "MUTT_ALERTER_METRICS_PORT": "0"}
    log = tmp_path / "alerter.log"
    alerter = start("run_alerter", env, log)
    try:
        assert wait_for(lambda: "PostgreSQL unavailable" in text(log), timeout=60), text(log)
        time.sleep(5)  # the rules are retried every second meanwhile
        assert alerter.poll() is None, "the alerter keeps waiting for the database"
    finally:
        stop(alerter)
    output = text(log)
    assert "Traceback" not in output, output
    assert len(lines(log, "PostgreSQL unavailable")) == 1, output
    assert len(warnings_after_start(log)) <= 1, f"at most that line once the alerter runs:\n{output}"
    assert alerter.returncode == 0
