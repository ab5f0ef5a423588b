"""One `mutt up` per data folder: the lock refuses a second holder, names the first, and dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mutt_project import instance


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_url(tmp_path):
    lock = instance.acquire(tmp_path, http_url="http://127.0.0.1:8123")
    try:
        assert (tmp_path / instance.LOCK_NAME).stat().st_mode & 0o777 == 0o600
        with pytest.raises(instance.AlreadyRunning) as refused:
            instance.acquire(tmp_path, http_url="http://127.0.0.1:9999")
        assert f"pid {os.getpid()}" in str(refused.value)
        assert "http://127.0.0.1:8123" in str(refused.value)
        assert instance.holder(tmp_path)["http_url"] == "http://127.0.0.1:8123"
    finally:
        lock.release()
    assert instance.holder(tmp_path) is None
    instance.acquire(tmp_path, http_url="http://127.0.0.1:9999").release()


def test_a_killed_holder_frees_the_folder_and_leaves_its_record_for_the_next(tmp_path):
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mutt_project import instance\n"
        "lock = instance.acquire(Path(sys.argv[1]), http_url='http://127.0.0.1:8124')\n"
        "lock.record(redis_pid=4242)\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert instance.holder(tmp_path)["pid"] == child.pid
        with pytest.raises(instance.AlreadyRunning):
            instance.acquire(tmp_path, http_url="http://127.0.0.1:9999")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    deadline = time.monotonic() + 5
    while instance.holder(tmp_path) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    lock = instance.acquire(tmp_path, http_url="http://127.0.0.1:9999")
    assert lock.previous["pid"] == child.pid
    assert lock.previous["redis_pid"] == 4242, "what the dead holder owned is known to the next one"
    lock.release(forget=False)  # gave up before deciding (e.g. its port was taken)
    lock = instance.acquire(tmp_path, http_url="http://127.0.0.1:9999")
    assert lock.previous["redis_pid"] == 4242, "still on record for the one after"
    lock.release()
    assert instance.acquire(tmp_path, http_url="http://127.0.0.1:9999").previous == {}
