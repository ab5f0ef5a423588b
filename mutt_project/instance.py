"""One ``mutt up`` per data folder: a lock held for the life of the process.

The lock is an ``fcntl`` lock on ``<data folder>/up.lock``; the kernel releases it when the holder
exits, however it exits, so a crashed ``mutt up`` never blocks the next one. The file also says who
holds it (pid, URL, start time) for the refusal message, and which embedded services the holder
started: a later ``mutt up`` adopts those if the holder died without stopping them, and leaves every
other running service to whoever started it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "up.lock"


class AlreadyRunning(RuntimeError):
    """Another ``mutt up`` holds the data folder; ``holder`` is what it recorded (possibly empty)."""

    def __init__(self, data_dir: Path, holder: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.holder = holder
        pid = holder.get("pid", "unknown")
        url = holder.get("http_url", "unknown URL")
        super().__init__(
            f"MUTT is already running on the data folder {data_dir} (mutt up pid {pid}, {url}). "
            f"Stop that one first (Ctrl-C in its terminal, or kill -TERM {pid}), "
            "or give this one another MUTT_DATA_DIR."
        )


def _read(handle_fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(handle_fd, 65536, 0)
        data = json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class InstanceLock:
    """The held lock; ``previous`` is what the last holder recorded (it is gone, or we would not hold it)."""

    def __init__(self, data_dir: Path, fd: int, previous: dict[str, Any], info: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd
        self.previous = previous
        self.info = info
        self._write()

    def record(self, **fields: Any) -> None:
        """Add to what the lock file says about this instance (e.g. the pids of services it owns)."""
        self.info.update(fields)
        self._write()

    def _write(self) -> None:
        if self._fd is None:
            return
        payload = json.dumps(self.info, sort_keys=True).encode()
        os.pwrite(self._fd, payload, 0)
        os.ftruncate(self._fd, len(payload))

    def release(self, *, forget: bool = True) -> None:
        """Drop the lock; ``forget`` clears the record (everything owned has been stopped)."""
        if self._fd is None:
            return
        if forget:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor releases the lock
        self._fd = None


def acquire(data_dir: Path, *, http_url: str) -> InstanceLock:
    """Take the data folder's lock at once, or raise :class:`AlreadyRunning` naming the holder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Not inheritable (Python's default): a server daemonised by this process must not hold the lock.
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise AlreadyRunning(data_dir, holder) from None
    previous = _read(fd)
    info = {"pid": os.getpid(), "http_url": http_url, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # Until the new holder records its own, the dead holder's services stay on record: if this one
    # gives up before deciding about them, the next one can still adopt them.
    info.update({k: v for k, v in previous.items() if k.endswith("_pid") and k != "pid"})
    return InstanceLock(data_dir, fd, previous, info)


def holder(data_dir: Path) -> dict[str, Any] | None:
    """What the running ``mutt up`` of ``data_dir`` recorded, or None when none runs."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        # A shared lock is granted only while nobody holds the exclusive one (and only for an instant).
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd)
    finally:
        os.close(fd)
    return None
