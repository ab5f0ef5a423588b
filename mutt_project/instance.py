"""One ``mutt up`` per data folder: a lock held for the life of the process.

The lock is an ``fcntl`` lock on ``<data folder>/up.lock``; the kernel releases it when the holder
exits, however it exits, so a crashed ``mutt up`` never blocks the next one. The file also says who
holds it (pid, URL, start time) for the refusal message, and which embedded services the holder
started: a later ``mutt up`` adopts those if the holder died without stopping them, and leaves every
other running service to whoever started it.

The record is rewritten in place (the lock belongs to the file's inode, so it cannot be replaced by
a rename): each write is one ``pwrite`` of the whole record, padded with whitespace to at least
the previous length, so the file is never empty or truncated mid-update. Linux does not make a
``pread`` atomic against a concurrent ``pwrite`` of the same bytes, and the head of a long record
spliced to the tail of a short one can be valid JSON, so the record starts with the CRC-32 of its
JSON: a reader that catches a torn copy sees the mismatch and reads again.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import zlib
from contextlib import suppress
from pathlib import Path
from typing import Any

LOCK_NAME = "up.lock"
# How long `acquire` keeps trying while the lock is held but the file names no live holder: a
# reader (`mutt services stop`) holds a shared lock for an instant, and a new holder writes its
# record just after taking the lock.
SETTLE_SECONDS = 2.0


class LockError(RuntimeError):
    """The data folder's lock cannot be taken or read; the message says why and what to do."""


class AlreadyRunning(LockError):
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


def _encode(info: dict[str, Any]) -> bytes:
    """``info`` as written to the file: the CRC-32 of its JSON in hex, a space, then the JSON."""
    body = json.dumps(info, sort_keys=True).encode()
    return b"%08x %s" % (zlib.crc32(body), body)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The record in ``raw``; None when it is not (yet) whole, e.g. a torn copy."""
    raw = raw.strip()
    if not raw:
        return {}
    # A record written without the checksum (by an earlier version) is taken as it is: every copy
    # this version writes starts with the checksum, so a torn one never starts with "{".
    checksum, _, body = (b"", b"", raw) if raw.startswith(b"{") else raw.partition(b" ")
    try:
        if checksum and int(checksum, 16) != zlib.crc32(body):
            return None
        data = json.loads(body.decode())
    except ValueError:
        return None
    return data if isinstance(data, dict) else {}


def _read(handle_fd: int, *, settle: float = 0.5) -> dict[str, Any]:
    """The record, read again for up to ``settle`` seconds while a copy is invalid; {} if it stays so."""
    deadline = time.monotonic() + settle
    while True:
        try:
            data = _parse(os.pread(handle_fd, 65536, 0))
        except OSError:
            return {}
        if data is not None:
            return data
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.01)


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _lock_error(path: Path, exc: OSError) -> LockError:
    owner = ""
    with suppress(OSError):
        uid = path.stat().st_uid
        if uid != os.geteuid():
            import pwd

            try:
                owner = f" It belongs to {pwd.getpwuid(uid).pw_name} (uid {uid}), not to this user"
            except KeyError:
                owner = f" It belongs to uid {uid}, not to this user"
            owner += f" ({os.geteuid()}): run MUTT as that user, or give this one another MUTT_DATA_DIR."
    return LockError(f"cannot use the instance lock file {path}: {exc.strerror or exc}.{owner}")


class InstanceLock:
    """The held lock; ``previous`` is what the last holder recorded (it is gone, or we would not hold it)."""

    def __init__(self, data_dir: Path, fd: int, previous: dict[str, Any], info: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd
        self._size = os.fstat(fd).st_size
        self.previous = previous
        self.info = info
        # Until this holder records what it owns, the previous holder's record must survive it.
        self.owns_recorded = False
        # `mutt up` records from its supervising thread and from a thread restarting a service.
        self._mutex = threading.Lock()
        self._write()

    def record(self, **fields: Any) -> None:
        """Add to what the lock file says about this instance (e.g. the pids of services it owns)."""
        with self._mutex:
            self.info.update(fields)
            self._write()

    def record_owned(self, **pids: int | None) -> None:
        """Record the pids of the services this holder owns (and will stop); replaces the previous holder's."""
        self.owns_recorded = True
        self.record(**pids)

    def _write(self) -> None:
        if self._fd is None:
            return
        payload = _encode(self.info)
        # Padding instead of a truncate: a reader never sees an empty file or a stale tail.
        payload = payload.ljust(self._size)
        os.pwrite(self._fd, payload, 0)
        self._size = len(payload)

    def release(self, *, forget: bool = True) -> None:
        """Drop the lock; ``forget`` clears the record (everything owned has been stopped).

        The record is cleared only once this holder has recorded what it owns: one that gave up
        before (e.g. its services would not start) leaves a killed holder's services on record, so
        the next holder can still adopt and stop them.
        """
        if self._fd is None:
            return
        if forget and self.owns_recorded:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor releases the lock
        self._fd = None


def acquire(data_dir: Path, *, http_url: str) -> InstanceLock:
    """Take the data folder's lock, or raise :class:`AlreadyRunning` naming the holder.

    Refuses at once when the record names a live holder; otherwise tries again for up to
    :data:`SETTLE_SECONDS` (a reader's instant shared lock, or a holder about to write its record).
    Raises :class:`LockError` when the file cannot be used at all (e.g. it belongs to another user).
    """
    path = data_dir / LOCK_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # Not inheritable (Python's default): a server daemonised by this process must not hold the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _lock_error(path, exc) from None
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _read(fd)
            if _pid_alive(holder.get("pid")) or time.monotonic() >= deadline:
                os.close(fd)
                raise AlreadyRunning(data_dir, holder) from None
            time.sleep(0.05)
        except OSError as exc:
            os.close(fd)
            raise _lock_error(path, exc) from None
    previous = _read(fd)
    info = {"pid": os.getpid(), "http_url": http_url, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # Until the new holder records its own, the dead holder's services stay on record: if this one
    # gives up before deciding about them, the next one can still adopt them.
    info.update({k: v for k, v in previous.items() if k.endswith("_pid") and k != "pid"})
    return InstanceLock(data_dir, fd, previous, info)


def holder(data_dir: Path) -> dict[str, Any] | None:
    """What the running ``mutt up`` of ``data_dir`` recorded, or None when none runs."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _lock_error(path, exc) from None
    try:
        # A shared lock is granted only while nobody holds the exclusive one (and only for an instant).
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd)
    finally:
        os.close(fd)
    return None
