"""The `mutt up` supervisor: restarts crashed children with backoff and stops all of them."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import redis

from mutt_project import embedded
from mutt_project.supervisor import ChildSpec, ServiceSpec, Supervisor, end_leftovers


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


def test_a_watched_server_killed_outright_is_started_again(private_tmp):
    folder = private_tmp / "data"
    embedded.start(folder, postgres=False, durable=False)
    try:
        supervisor = Supervisor([], backoff_base=0.1)
        restart = lambda: embedded.start(folder, postgres=False, durable=False)  # noqa: E731
        supervisor.watch([ServiceSpec("redis", running=lambda: embedded.redis_running(folder), start=restart)])
        old = embedded.redis_pid(folder)
        supervisor.step()
        assert supervisor.services[0].restarts == 0, "a running server is left alone"
        psutil.Process(old).kill()
        assert wait_until(lambda: (supervisor.step(), embedded.redis_pid(folder) not in (None, old))[1])
        assert supervisor.services[0].restarts == 1
        assert redis.Redis.from_url(embedded.redis_url(folder)).ping()
    finally:
        embedded.stop(folder, postgres=False)


def test_a_watched_server_that_fails_to_start_is_retried_with_growing_backoff(tmp_path):
    target = tmp_path / "not-yet" / "running"
    supervisor = Supervisor([], backoff_base=0.05, backoff_max=0.4)
    supervisor.watch([ServiceSpec("file", running=target.exists, start=lambda: target.write_text("up"))])
    delays = []
    while len(delays) < 4:
        supervisor.step()
        service = supervisor.services[0]
        if service.restart_at is not None and (not delays or delays[-1][0] != service.failures):
            delays.append((service.failures, service.restart_at - time.monotonic()))
        time.sleep(0.01)
    assert [failures for failures, _ in delays] == [1, 2, 3, 4]
    assert delays[-1][1] > delays[0][1], "each failed start waits longer"
    target.parent.mkdir()
    assert wait_until(lambda: (supervisor.step(), target.exists() and supervisor.services[0].restart_at is None)[1])


# A supervising process as `mutt up` runs one: two long-lived children, one forking a worker (like gunicorn).
SUPERVISOR_SCRIPT = """
import sys
from mutt_project.supervisor import ChildSpec, Supervisor
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
forker = [sys.executable, "-c", (
    "import os, signal, sys, time\\nworker = os.fork()\\nif worker == 0:\\n    time.sleep(120)\\nelse:\\n"
    "    signal.signal(signal.SIGTERM, lambda *_: (os.kill(worker, 9), sys.exit(0)))\\n    time.sleep(120)"
)]
supervisor = Supervisor([ChildSpec("sleeper", sleeper), ChildSpec("forker", forker)], grace=5)
supervisor.install_signal_handlers()
supervisor.run(poll_interval=0.05)
print("stopped cleanly", flush=True)
"""


def start_supervising_process(*, nohup: bool = False) -> tuple[subprocess.Popen, list[int]]:
    process = subprocess.Popen(
        ["nohup", sys.executable, "-c", SUPERVISOR_SCRIPT] if nohup else [sys.executable, "-c", SUPERVISOR_SCRIPT],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    tree = lambda: psutil.Process(process.pid).children(recursive=True)  # noqa: E731
    assert wait_until(lambda: len(tree()) == 3), "two children and the forked worker"
    return process, [p.pid for p in tree()]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_children_do_not_outlive_a_killed_supervisor():
    """SIGKILL or the OOM killer gives the supervisor no chance to stop its children: they stop themselves."""
    process, pids = start_supervising_process()
    try:
        process.kill()
        process.wait(timeout=10)
        assert wait_until(lambda: all(gone(pid) for pid in pids)), "children left running after their supervisor"
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def test_sighup_stops_the_supervisor_and_its_children_cleanly():
    """A closed terminal or SSH session (SIGHUP) is a stop request, like Ctrl-C."""
    process, pids = start_supervising_process()
    try:
        process.send_signal(signal.SIGHUP)
        assert process.wait(timeout=15) == 0
        assert process.stdout.read().strip() == "stopped cleanly"
        assert [pid for pid in pids if not gone(pid)] == []
    finally:
        if process.poll() is None:
            process.kill()
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def test_a_blocked_service_start_neither_holds_up_child_restarts_nor_a_stop():
    """PostgreSQL's start can take a minute; meanwhile crashed children come back and a stop is honoured."""
    release = threading.Event()
    supervisor = Supervisor([ChildSpec("crasher", python("import sys; sys.exit(3)"))], backoff_base=0.05, grace=5)
    supervisor.watch([ServiceSpec("stuck", running=lambda: False, start=lambda: release.wait(5))])
    supervisor.start()
    try:
        service, child = supervisor.services[0], supervisor.children[0]
        assert wait_until(lambda: (supervisor.step(), service.restarts == 1 and child.restarts >= 3)[1], timeout=3)
        assert supervisor.wait_for_services(timeout=0) is False, "the start is still blocked"

        # What the SIGTERM handler does; the loop and the children's stop do not wait for the start.
        threading.Timer(0.2, supervisor.request_stop).start()
        began = time.monotonic()
        while not supervisor.stopping:
            supervisor.step()
            time.sleep(0.05)
        supervisor.stop_all()
        assert time.monotonic() - began < 3
        assert supervisor.pids() == {"crasher": None}
        assert supervisor.wait_for_services(timeout=0.1) is False, "the owner learns a start is still running"
        release.set()
        assert supervisor.wait_for_services(timeout=5) is True
    finally:
        release.set()
        supervisor.stop_all()


def test_the_next_run_ends_what_a_killed_supervisors_children_left_running_and_nothing_else():
    """A child that ignores its parent-death SIGTERM (or is still draining) is ended by the next run."""
    stubborn = "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nos.fork()\ntime.sleep(120)"
    recorded = []
    supervisor = Supervisor([ChildSpec("stubborn", python(stubborn))], on_spawn=recorded.append)
    supervisor.start()
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        records = recorded[-1]
        assert records == [{"pgid": supervisor.pids()["stubborn"], "argv": python(stubborn)}]
        leader = psutil.Process(supervisor.pids()["stubborn"])
        assert wait_until(lambda: len(leader.children()) == 1)
        group = [leader.pid, leader.children()[0].pid]
        # A pid reused by another program: a different command line, so it is not touched.
        records.append({"pgid": unrelated.pid, "argv": ["sleep", "61"]})
        ended = end_leftovers(records, grace=0.5)
        assert sorted(ended) == sorted(group)
        assert all(gone(pid) for pid in group)
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()
        supervisor.stop_all()


def test_under_nohup_sighup_is_still_ignored():
    process, pids = start_supervising_process(nohup=True)
    try:
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None, "nohup asked it to outlive its terminal"
        assert [pid for pid in pids if gone(pid)] == []
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
        assert wait_until(lambda: all(gone(pid) for pid in pids))
