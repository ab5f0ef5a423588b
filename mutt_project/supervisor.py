"""A small process supervisor for ``mutt up`` on a single machine.

Each child runs in its own process group (so a terminal's Ctrl-C reaches only the supervisor, which
then stops children in order). SIGTERM, SIGINT and SIGHUP (a closed terminal or SSH session) all
stop the supervisor cleanly. A supervisor that dies without stopping them (SIGKILL, OOM killer) does
not leave its children behind either: on Linux each child asks the kernel for SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``), and a child that forked workers (gunicorn) stops them itself.

A child that exits unexpectedly is restarted with exponential backoff; the backoff resets once it
has stayed up for a while. On stop, every group gets SIGTERM, then SIGKILL after a grace period,
and the supervisor waits for each, so nothing is left behind.

Servers that daemonise themselves (the embedded PostgreSQL and Redis) are not children; they are
*watched*: probed on every step and started again, with the same backoff, when the probe says they
are down. Stopping them is left to their owner. A start can take a minute (PostgreSQL's recovery),
so it runs in a worker thread: meanwhile the loop keeps restarting crashed children and honours a
stop request at once; the owner calls :meth:`Supervisor.wait_for_services` before stopping servers.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

logger = logging.getLogger("mutt.supervisor")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Signals that stop the supervisor cleanly; SIGHUP is what an SSH disconnect sends.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies, however it dies.

    The kernel sends it when the *thread* that forked the child exits, so children are spawned only
    from the supervising (main) thread. Resolved before the fork: the child only calls it.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    # Seconds a child must run before a later crash counts as a fresh failure (backoff reset).
    stable_after: float = 30.0


@dataclass
class ServiceSpec:
    """A self-daemonising server: ``running`` probes it (cheaply), ``start`` brings it back or raises."""

    name: str
    running: Callable[[], bool]
    start: Callable[[], object]  # its result, if any, is ignored
    stable_after: float = 30.0


@dataclass
class _Service:
    spec: ServiceSpec
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0
    # The start in progress, and how it ended (None: it succeeded), read once the thread is done.
    starting: threading.Thread | None = None
    error: BaseException | None = None


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # exit codes, for status and tests


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        grace: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        on_spawn: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.children = [_Child(spec) for spec in specs]
        # Told the running children (see ``running()``) after every spawn, to record them for a later run.
        self.on_spawn = on_spawn
        self.services: list[_Service] = []
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.grace = grace
        self.clock = clock
        self.stopping = False

    def add(self, specs: list[ChildSpec]) -> None:
        """Add children before ``start()`` (``mutt up`` decides some only once the services are up)."""
        self.children.extend(_Child(spec) for spec in specs)

    def watch(self, specs: list[ServiceSpec]) -> None:
        """Watch servers that are already running; from now on ``step()`` restarts them when down."""
        now = self.clock()
        self.services.extend(_Service(spec, started_at=now) for spec in specs)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._spawned()

    def request_stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        if not self.stopping:
            logger.info("stop requested (signal %s); stopping children", signum)
        self.stopping = True

    def install_signal_handlers(self) -> None:
        for signum in STOP_SIGNALS:
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: asked to outlive its terminal
            signal.signal(signum, self.request_stop)

    def run(self, poll_interval: float = 0.5) -> None:
        """Start children and supervise until asked to stop; then stop them all."""
        self.start()
        try:
            while not self.stopping:
                self.step()
                time.sleep(poll_interval)
        finally:
            self.stop_all()

    def step(self) -> None:
        """Notice exited children and downed services; restart them when their backoff has passed."""
        now = self.clock()
        for service in self.services:
            self._step_service(service, now)
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                code = process.returncode
                child.history.append(code)
                child.process = None
                ran_for = now - child.started_at
                child.failures = 1 if ran_for >= child.spec.stable_after else child.failures + 1
                delay = min(self.backoff_max, self.backoff_base * 2 ** (child.failures - 1))
                child.restart_at = now + delay
                logger.warning(
                    "%s exited with %s after %.1fs; restarting in %.1fs",
                    child.spec.name,
                    code,
                    ran_for,
                    delay,
                )
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                self._spawned()

    def stop_all(self) -> None:
        """SIGTERM every child's process group, wait up to ``grace``, SIGKILL what is left, reap all."""
        self.stopping = True
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in reversed(running):
            self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in reversed(running):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", child.spec.name, self.grace)
                self._signal_group(child, signal.SIGKILL)
                child.process.wait(timeout=10)
            # Workers the child forked share its group; make sure none outlives it.
            self._signal_group(child, signal.SIGKILL)
            logger.info("%s stopped (exit %s)", child.spec.name, child.process.returncode)
        for child in self.children:
            child.process = None
            child.restart_at = None
        for service in self.services:
            service.restart_at = None

    def _backoff(self, failures: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))

    def wait_for_services(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for starts in progress to end; True when none is left running.

        The owner stops its servers only after this: a start that ends later would leave one running.
        """
        deadline = time.monotonic() + timeout
        for service in self.services:
            if service.starting is not None:
                service.starting.join(max(0.0, deadline - time.monotonic()))
        return not any(s.starting is not None and s.starting.is_alive() for s in self.services)

    def _step_service(self, service: _Service, now: float) -> None:
        name = service.spec.name
        if service.starting is not None:
            if service.starting.is_alive():
                return  # still starting: not probed, not started twice
            self._started(service)
            return
        if service.restart_at is None:
            if service.spec.running():
                return
            ran_for = now - service.started_at
            service.failures = 1 if ran_for >= service.spec.stable_after else service.failures + 1
            delay = self._backoff(service.failures)
            service.restart_at = now + delay
            logger.warning("%s is down after %.1fs; restarting in %.1fs", name, ran_for, delay)
            return
        if self.stopping or now < service.restart_at:
            return
        service.restarts += 1
        service.error = None

        def start() -> None:
            try:
                service.spec.start()
            except Exception as exc:
                service.error = exc
                return
            logger.info("%s restarted", name)  # said when it happens; the loop accounts for it on its next step

        service.starting = threading.Thread(target=start, name=f"start {name}", daemon=True)
        service.starting.start()

    def _started(self, service: _Service) -> None:
        """Account for a start that has ended (called from the supervising thread)."""
        name = service.spec.name
        service.starting = None
        if service.error is not None:
            service.failures += 1
            delay = self._backoff(service.failures)
            service.restart_at = self.clock() + delay
            logger.error("%s did not start (%s); trying again in %.1fs", name, service.error, delay)
            return
        service.started_at = self.clock()
        service.restart_at = None

    # --- helpers ------------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **(child.spec.env or {})}
        # The preexec function only calls prctl, resolved before the fork: no lock another thread
        # could hold is taken in the child.
        child.process = subprocess.Popen(
            child.spec.argv,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509
        )
        child.started_at = self.clock()
        child.restart_at = None
        logger.info("%s started (pid %s)", child.spec.name, child.process.pid)

    @staticmethod
    def _signal_group(child: _Child, sig: signal.Signals) -> None:
        if child.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, sig)

    def running(self) -> list[dict[str, Any]]:
        """The running children as a later run can recognise them: process group and command line."""
        return [{"pgid": c.process.pid, "argv": c.spec.argv} for c in self.children if c.process is not None]

    def _spawned(self) -> None:
        if self.on_spawn is not None:
            self.on_spawn(self.running())

    def pids(self) -> dict[str, int | None]:
        return {c.spec.name: (c.process.pid if c.process else None) for c in self.children}


def end_leftovers(records: list[dict[str, Any]], *, grace: float = 10.0) -> list[int]:
    """End the processes a killed supervisor's children left behind; returns the pids it ended.

    ``records`` is what ``running()`` said then. A process counts only if it is still in the recorded
    process group *and* runs the recorded command line (a child, or a worker it forked): a pid reused
    by anything else is left alone. They get SIGTERM, then SIGKILL after ``grace`` seconds.
    """
    wanted = {(r["pgid"], tuple(r["argv"])) for r in records if isinstance(r, dict) and r.get("pgid") and r.get("argv")}
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (os.getpgid(process.pid), tuple(process.info["cmdline"] or ())) in wanted:
                found.append(process)
    if not found:
        return []
    logger.warning("ending %d process(es) a killed mutt up left running: %s", len(found), [p.pid for p in found])
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    alive = _wait_gone(found, grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait_gone(alive, 5)
    return [p.pid for p in found]


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each has exited (a zombie counts: they are not our children to reap); returns the rest."""

    def running(process: psutil.Process) -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    left = [p for p in processes if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if running(p)]
    return left
