"""One `mutt up` per data folder: the lock refuses a second holder, names the first, and dies with it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    lock.release()  # gave up before recording what it owns (its port was taken, a service would not start)
    lock = instance.acquire(tmp_path, http_url="http://127.0.0.1:9999")
    assert lock.previous["redis_pid"] == 4242, "still on record for the one after"
    lock.record_owned(redis_pid=None)  # decided: it stopped (or adopted and will stop) what was left
    lock.release()
    assert instance.acquire(tmp_path, http_url="http://127.0.0.1:9999").previous == {}


def test_a_readers_instant_shared_lock_does_not_make_acquire_refuse(tmp_path):
    """`mutt services stop` checks for a holder with a shared lock; a `mutt up` starting then still starts."""
    (tmp_path / instance.LOCK_NAME).touch()
    reader = os.open(tmp_path / instance.LOCK_NAME, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.3, os.close, [reader]).start()
    lock = instance.acquire(tmp_path, http_url="http://127.0.0.1:8125")
    assert instance.holder(tmp_path)["pid"] == os.getpid()
    lock.release()


def test_readers_never_see_a_partial_record_while_the_holder_rewrites_it(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mutt_project import instance\n"
        "lock = instance.acquire(Path(sys.argv[1]), http_url='http://127.0.0.1:8126')\n"
        "print('held', flush=True)\n"
        "for i in range(1000000):\n"
        "    lock.record(redis_pid=i, note='x' * (i % 2 * 300))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        seen = [instance.holder(tmp_path) for _ in range(3000)]
        assert child.poll() is None, "the holder was still rewriting its record"
    finally:
        child.kill()
        child.wait(timeout=10)
    assert [record for record in seen if record is None or record.get("pid") != child.pid] == []


def _lock_errors(data_dir: Path) -> list[str]:
    """The LockError messages of acquire and holder on ``data_dir`` (any other exception propagates)."""
    messages = []
    for attempt in (lambda: instance.acquire(data_dir, http_url="x"), lambda: instance.holder(data_dir)):
        try:
            attempt()
        except instance.LockError as exc:
            messages.append(str(exc))
    return messages


def test_a_lock_file_this_user_cannot_open_is_a_clear_error_not_a_traceback(private_tmp):
    private_tmp.chmod(0o755)
    path = private_tmp / instance.LOCK_NAME
    path.write_text("")
    path.chmod(0o600)
    if os.geteuid() != 0:
        path.chmod(0)
        messages = _lock_errors(private_tmp)
    else:
        # Root may open any file: the attempt runs in a forked child that has become an unprivileged user.
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                os.write(write_end, "\n".join(_lock_errors(private_tmp)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as handle:
            output = handle.read()
        assert os.waitpid(pid, 0)[1] == 0, "the child raised something other than LockError"
        messages = output.splitlines()
    assert len(messages) == 2, messages
    assert all(f"cannot use the instance lock file {path}: Permission denied" in m for m in messages)
    if os.geteuid() == 0:
        assert "belongs to root" in messages[0]


def test_a_torn_copy_that_is_valid_json_is_read_again_not_believed():
    """Found in CI: the head of a long record spliced to the tail of a short one parsed as a record without a pid."""
    long_record = instance._encode({"http_url": "http://x", "note": "x" * 300, "pid": 7, "started_at": "T13:46+0000"})
    short_record = instance._encode({"http_url": "http://x", "note": "", "pid": 8, "started_at": "T13:46+0000"})
    torn = long_record[: len(long_record) - len(b'3:46+0000"}') - 60] + short_record[-len(b'3:46+0000"}') :]
    assert json.loads(torn.partition(b" ")[2]), "the splice is valid JSON: only the checksum tells it apart"
    assert instance._parse(torn) is None
    assert instance._parse(short_record.ljust(len(long_record))) == {
        "http_url": "http://x",
        "note": "",
        "pid": 8,
        "started_at": "T13:46+0000",
    }
    assert instance._parse(b'{"pid": 5}') == {"pid": 5}, "a record written before the checksum is still read"
    assert instance._parse(b"") == {}
