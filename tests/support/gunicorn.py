"""Run MUTT's gunicorn (its real config) as a child process for a test, and talk raw HTTP to it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        """The master's children: gunicorn's workers (the same set while no worker died)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return {int(pid) for pid in children.split()}


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str]]:
    """(status, headers) of a GET; status 0 when nothing answers."""
    call = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)
    except OSError:
        return 0, {}


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> int:
    """The status of a POST; 0 when nothing answers in time."""
    call = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection and read the answer until the server closes it (b"" if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def running_gunicorn(env: dict[str, str], log: Path, *args: str, workers: int = 1) -> Iterator[Server]:
    """gunicorn with ``mutt_project/gunicorn.conf.py`` (as ``mutt up`` runs it), stdout and stderr in ``log``."""
    port = free_port()
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "mutt_project/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "--workers", str(workers), *args],
            cwd=BASE_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + 60
        while get(f"{server.url}/healthz", timeout=2)[0] != 200:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
