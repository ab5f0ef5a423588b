"""The `mutt up` supervisor: restarts crashed children with backoff and stops all of them."""

from __future__ import annotations

import sys
import time

import psutil

from mutt_project.supervisor import ChildSpec, Supervisor


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_crashing_child_is_restarted_with_growing_backoff():
    supervisor = Supervisor([ChildSpec("crasher", python("import sys; sys.exit(3)"))], backoff_base=0.1)
    supervisor.start()
    try:
        assert wait_until(lambda: (supervisor.step(), supervisor.children[0].restarts >= 3)[1])
        child = supervisor.children[0]
        assert child.history[:3] == [3, 3, 3]
        assert child.failures >= 3
    finally:
        supervisor.stop_all()


def test_backoff_resets_after_a_child_ran_stably():
    supervisor = Supervisor([ChildSpec("brief", python("import sys; sys.exit(1)"), stable_after=0.0)], backoff_base=5)
    supervisor.start()
    try:
        assert wait_until(lambda: (supervisor.step(), supervisor.children[0].history)[1])
        child = supervisor.children[0]
        assert child.failures == 1
        assert child.restart_at - time.monotonic() <= 5.0
    finally:
        supervisor.stop_all()


def test_stop_all_terminates_children_and_their_forked_workers():
    # A child that forks a grandchild, like gunicorn's master and workers.
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(120)\nelse:\n    time.sleep(120)"
    supervisor = Supervisor([ChildSpec("parent", python(code))], grace=5)
    supervisor.start()
    pid = supervisor.pids()["parent"]
    assert wait_until(lambda: len(psutil.Process(pid).children()) == 1)
    grandchild = psutil.Process(pid).children()[0].pid
    supervisor.stop_all()
    assert not psutil.pid_exists(pid)
    assert wait_until(lambda: not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie")


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period():
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(120)"
    supervisor = Supervisor([ChildSpec("stubborn", python(code))], grace=0.5)
    supervisor.start()
    pid = supervisor.pids()["stubborn"]
    time.sleep(0.3)  # let it install its handler
    started = time.monotonic()
    supervisor.stop_all()
    assert not psutil.pid_exists(pid)
    assert time.monotonic() - started < 5
