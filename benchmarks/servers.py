"""Starting the servers a stage needs (gunicorn, mock_moog, workers) and the load generators.

gunicorn runs exactly as ``mutt up`` runs it (``mutt_project/gunicorn.conf.py``, one worker per core,
loopback), except that its settings module may be ``benchmarks.settings``: MUTT's URLs plus one bare
view, the framework ceiling.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from benchmarks.env import BASE_DIR, BenchEnv
from benchmarks.procs import Child, ChildFailed

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """A small JSON request to one of our own loopback servers: (status, decoded body or None)."""
    data = None if body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310  (loopback)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  (loopback URL we built)
            raw = response.read()
            return response.status, orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_http(url: str, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise ChildFailed(f"{child.name} did not answer {url} within {timeout:.0f}s:\n{child.log_tail()}")


def web_workers(plan_workers: int) -> int:
    """The gunicorn workers a stage runs: ``plan_workers``, or one per core (``mutt up``'s default) if 0."""
    return plan_workers or os.cpu_count() or 2


def start_gunicorn(
    env: BenchEnv, name: str, *, workers: int, settings_module: str = "mutt_project.settings"
) -> tuple[Child, int]:
    port = free_port()
    metrics = env.data_dir / "prometheus"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(parents=True)
    argv = [
        sys.executable, "-m", "gunicorn", "-c", str(BASE_DIR / "mutt_project" / "gunicorn.conf.py"),
        "--bind", f"{HOST}:{port}", "--workers", str(workers), "--chdir", str(BASE_DIR),
    ]  # fmt: skip
    child = env.children.spawn(
        name, argv, env.child_env(DJANGO_SETTINGS_MODULE=settings_module, PROMETHEUS_MULTIPROC_DIR=str(metrics))
    )
    wait_http(f"http://{HOST}:{port}/healthz", child)
    return child, port


def start_mock_moog(env: BenchEnv, name: str, *, max_events: int) -> tuple[Child, str]:
    port = free_port()
    argv = env.manage_argv("mock_moog", "--host", HOST, "--port", str(port), "--max-events", str(max_events))
    child = env.children.spawn(name, argv, env.child_env())
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/health", child)
    return child, url


def mock_stats(url: str) -> dict[str, Any]:
    return http("GET", f"{url}/control")[1]["stats"]


def start_worker(env: BenchEnv, name: str, command: str, *, until_idle: bool = True) -> Child:
    """``run_alerter`` / ``run_forwarder``, by default with ``--until-idle`` (it exits by itself when done)."""
    argv = env.manage_argv(command, "--consumer", name, *(["--until-idle"] if until_idle else []))
    return env.children.spawn(name, argv, env.child_env())


def run_loadgen(
    env: BenchEnv,
    name: str,
    *,
    processes: int,
    args: list[str],
    bodies: list[Any],
    api_key: str,
    timeout: float,
) -> list[dict[str, Any]]:
    """Run ``processes`` load generators with ``args`` until they finish; their decoded results."""
    folder = env.data_dir / "loadgen"
    folder.mkdir(parents=True, exist_ok=True)
    bodies_file = folder / f"{name}-bodies.json"
    bodies_file.write_bytes(orjson.dumps(bodies))
    outputs = [folder / f"{name}-{i}.json" for i in range(processes)]
    for path in outputs:
        path.unlink(missing_ok=True)
    children = [
        env.children.spawn(
            f"{name}-{i}",
            [sys.executable, "-m", "devtools.loadgen", *args, "--bodies", str(bodies_file), "--out", str(out)],
            env.child_env(BENCH_API_KEY=api_key),
        )
        for i, out in enumerate(outputs)
    ]
    for child in children:
        code = env.children.wait(child, timeout)
        if code != 0:
            raise ChildFailed(f"{child.name} failed ({code}):\n{child.log_tail()}")
    return [orjson.loads(Path(path).read_bytes()) for path in outputs]
