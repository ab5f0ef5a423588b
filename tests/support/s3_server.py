"""A real S3-compatible server for tests: moto in server mode, as a subprocess on a free port.

One server per test session (started on first use, stopped at exit). It speaks S3 over HTTP like
MinIO or AWS would, so boto3 and the archive store run unmodified. Failing to start is an error,
never a skip: the S3 store must be tested wherever the suite runs (CI=true included).
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import time
import urllib.request

ACCESS_KEY = "mutt-test-key"
SECRET_KEY = "mutt-test-secret"  # moto accepts any credentials; the store still sends these


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class S3Server:
    _shared: S3Server | None = None

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def shared(cls) -> S3Server:
        if cls._shared is None or not cls._shared.running():
            cls._shared = cls().start()
            atexit.register(cls._shared.stop)
        return cls._shared

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
