"""The harness's child processes: each in its own process group, always stopped, none left behind.

Every child (gunicorn, run_alerter, run_forwarder, mock_moog, muttctl watch, load generators) starts a
new session, so its process-group id is its pid and everything it forks (gunicorn workers) shares it.
Stopping sends SIGTERM to the group, waits, then SIGKILLs the group; :meth:`Children.survivors`
checks the whole process table for any member of any group this harness started. Group ids are also
written to a file in the data folder, so a run after a harness that was itself killed (SIGKILL leaves
no chance to clean up) stops what that one left: :meth:`Children.kill_recorded`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger("benchmarks")


class ChildFailed(RuntimeError):
    """A child exited early or with an error; the message carries the end of its log."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's log (for error messages)."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(max(0, self.log.stat().st_size - chars))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def count_in_log(self, text: str) -> int:
        """Lines of the whole log containing ``text`` (read line by line: an access log runs to many MB)."""
        needle = text.encode()
        try:
            with self.log.open("rb") as handle:
                return sum(1 for line in handle if needle in line)
        except OSError:
            return 0

    def check_alive(self) -> None:
        if not self.alive():
            raise ChildFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")


class Children:
    """Spawns children with logs under ``log_dir`` and keeps every group id it ever created."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.record = log_dir / "children.pgids"
        self.groups: set[int] = set()
        self.running: list[Child] = []

    def kill_recorded(self) -> list[int]:
        """SIGKILL the groups a previous harness in this folder recorded, if ours are still alive there."""
        try:
            recorded = {int(line) for line in self.record.read_text().split()}
        except (OSError, ValueError):
            return []
        ours = [pid for pid in _members(recorded) if _is_ours(pid, self.cwd)]
        for pgid in recorded:
            if any(os.getpgid(pid) == pgid for pid in ours if psutil.pid_exists(pid)):
                _signal_group(pgid, signal.SIGKILL)
        self.record.unlink(missing_ok=True)
        return ours

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.groups.add(process.pid)
        with self.record.open("a") as handle:
            handle.write(f"{process.pid}\n")
        child = Child(name, process, log)
        self.running.append(child)
        return child

    def wait(self, child: Child, timeout: float) -> int:
        """Wait for ``child`` to exit by itself; stop it (and fail) if it takes longer than ``timeout``."""
        try:
            code = child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(child)
            raise ChildFailed(f"{child.name} did not finish within {timeout:.0f}s:\n{child.log_tail()}") from None
        self._reap_group(child)
        return code

    def stop(self, child: Child, grace: float = 15.0) -> int | None:
        """SIGTERM the child's group, SIGKILL it after ``grace`` seconds; returns the exit code."""
        if child.alive():
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", child.name, grace)
                _signal_group(child.pid, signal.SIGKILL)
                child.process.wait(timeout=10)
        self._reap_group(child)
        return child.process.returncode

    def _reap_group(self, child: Child) -> None:
        # Whatever the child forked (gunicorn workers) shares its group and must not outlive it.
        _signal_group(child.pid, signal.SIGKILL)
        if child in self.running:
            self.running.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.running)):
            try:
                self.stop(child)
            except Exception:
                logger.exception("could not stop %s", child.name)

    def survivors(self, wait: float = 5.0) -> list[int]:
        """Pids still alive in any group this harness created (zombies excluded), after up to ``wait`` s."""
        deadline = time.monotonic() + wait
        while True:
            alive = _members(self.groups)
            if not alive or time.monotonic() > deadline:
                return alive
            for pgid in self.groups:
                _signal_group(pgid, signal.SIGKILL)
            time.sleep(0.1)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _is_ours(pid: int, cwd: Path) -> bool:
    """A harness child: started in this checkout, running manage.py, gunicorn or the load generator."""
    try:
        process = psutil.Process(pid)
        command = " ".join(process.cmdline())
        return process.cwd() == str(cwd) and any(p in command for p in ("manage.py", "gunicorn", "benchmarks."))
    except psutil.Error:
        return False


def _members(groups: set[int]) -> list[int]:
    found = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(process.pid) in groups:
                found.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


class ForeignCpu:
    """CPU that other processes used while a stage ran: on a small shared machine it skews every figure.

    "Ours" is this process and all its descendants (children keep their parent even in their own
    sessions), and the database and Redis servers (which serve us, even when others share them).
    Processes that both start and exit within the stage are not seen.
    """

    SERVICES = ("postgres", "redis-server")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.before = self._foreign()

    def _foreign(self) -> dict[int, float]:
        me = psutil.Process()
        ours = {me.pid, *(child.pid for child in me.children(recursive=True))}
        usage: dict[int, float] = {}
        for process in psutil.process_iter(["pid", "name"]):
            if process.info["pid"] in ours or (process.info["name"] or "").startswith(self.SERVICES):
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            usage[process.info["pid"]] = times.user + times.system
        return usage

    def cores(self) -> float:
        """Average cores the other processes kept busy since this object was made."""
        after = self._foreign()
        used = sum(max(0.0, seconds - self.before.get(pid, 0.0)) for pid, seconds in after.items())
        return round(used / max(time.monotonic() - self.started, 1e-6), 2)


class BusyCores:
    """Cores one worker process and the database and Redis servers kept busy over a window.

    Tells whether a stage is bound by the worker's own CPU (near 1.0: one Python thread's worth) or by
    waiting on the servers, which is what decides between cutting Python work and overlapping it.
    "servers" is PostgreSQL and Redis together; each is given on its own as well.
    """

    SIDES = {"postgres": "postgres", "redis-server": "redis"}

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.before = self._usage()

    def _usage(self) -> dict[str, dict[int, float]]:
        usage: dict[str, dict[int, float]] = {"worker": {}, "postgres": {}, "redis": {}}
        for process in psutil.process_iter(["pid", "name"]):
            pid, name = process.info["pid"], process.info["name"] or ""
            side: str | None
            if pid == self.pid:
                side = "worker"
            else:
                side = next((s for prefix, s in self.SIDES.items() if name.startswith(prefix)), None)
            if side is None:
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            usage[side][pid] = times.user + times.system
        return usage

    def cores(self) -> dict[str, float]:
        """Average cores per side ("worker", "postgres", "redis", and "servers" for the two) since this
        object was made."""
        after = self._usage()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        seconds = {
            side: sum(max(0.0, s - self.before[side].get(pid, 0.0)) for pid, s in pids.items())
            for side, pids in after.items()
        }
        seconds["servers"] = seconds["postgres"] + seconds["redis"]
        return {side: round(busy / elapsed, 2) for side, busy in seconds.items()}
