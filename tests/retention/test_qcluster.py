"""The scheduled jobs in real django-q2 clusters (``qcluster`` subprocesses on this run's database and Redis):
a schedule runs its job; a failing job is retried a bounded number of times and recorded; two clusters
never run a job at once; a killed cluster's task is run again."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Failure, OrmQ, Schedule, Success, Task
from django_q.tasks import async_task

from core.redis import key
from retention import job_metrics
from retention.scheduling import ENTRY, sync_schedules
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def clean_redis(redis_client):
    def clean() -> None:
        for pattern in ("jobs:*", "qtest:*"):
            names = list(redis_client.scan_iter(match=key(pattern)))
            if names:
                redis_client.delete(*names)

    clean()
    yield
    clean()


class Clusters:
    """Starts ``qcluster`` processes (with the test jobs) and kills whatever is left at the end."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.started: list[tuple[subprocess.Popen, str]] = []

    def start(self, name: str, **env: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.retention.qcluster_jobs"], cwd=settings.BASE_DIR,
            env={**self.env, "MUTT_SCHEDULER_WORKERS": "1", **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.started.append((process, name))
        assert wait_for(lambda: "running." in self.log(name), timeout=60), self.log(name)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the cluster and every process it forked
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process, _ in self.started:
            self.kill(process)


@pytest.fixture
def clusters(child_env, tmp_path) -> Iterator[Clusters]:
    # Only the tasks a test enqueues: the schedules migrate made would add theirs after 30 s.
    Schedule.objects.update(repeats=0)
    running = Clusters(child_env, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def notes(redis_client, name: str) -> list[str]:
    return [value.decode() for value in redis_client.lrange(key("qtest", name), 0, -1)]


def runs(job: str) -> dict[str, int]:
    counts, _ = job_metrics.read(job_metrics.get_redis())
    return {outcome: count for (name, outcome), count in counts.items() if name == job}


def test_a_schedule_runs_its_job_once_in_one_of_two_clusters_and_moves_to_its_next_time(clusters):
    sync_schedules()
    schedule = Schedule.objects.get(name="audit_partitions", func=ENTRY)
    # Resumed and due (the fixture paused every schedule), as an operator would in the admin.
    Schedule.objects.filter(pk=schedule.pk).update(repeats=-1, next_run=timezone.now() - timedelta(seconds=1))
    clusters.start("one")
    clusters.start("two")

    # Each cluster's scheduler looks at the schedules every 30 s, both at about the same time here.
    assert wait_for(lambda: Success.objects.filter(group="audit_partitions").exists(), timeout=60, interval=0.5), (
        clusters.log("one")
    )
    assert not wait_for(lambda: Task.objects.count() > 1, timeout=5, interval=0.5), "one task per due time"
    task = Success.objects.get(group="audit_partitions")
    assert (task.func, task.args) == (ENTRY, ("audit_partitions",))
    assert task.result.startswith(("done: created ", "idle: every partition exists")), task.result
    schedule.refresh_from_db()
    assert schedule.next_run > timezone.now() + timedelta(minutes=59), "due again one interval later"
    assert sum(runs("audit_partitions").get(outcome, 0) for outcome in ("done", "idle")) == 1
    logs = clusters.log("one") + clusters.log("two")
    assert logs.count("job audit_partitions ") == 1, "the runner's log line, from a cluster's worker"


def test_a_failing_job_is_retried_soon_a_bounded_number_of_times_recorded_as_a_failure_and_counted(
    clusters, redis_client
):
    # Retried after the failure delay (1 s), long before `retry` (an hour) would hand the task out again.
    clusters.start(
        "one", MUTT_SCHEDULER_RETRY_SECONDS="3600", MUTT_SCHEDULER_FAILURE_RETRY_SECONDS="1",
        MUTT_SCHEDULER_MAX_ATTEMPTS="3",
    )  # fmt: skip
    async_task(ENTRY, "qtest_fails", q_options={"timeout": 2, "group": "qtest_fails"})

    assert wait_for(lambda: len(notes(redis_client, "fails")) == 3, timeout=30, interval=0.2), clusters.log("one")
    assert wait_for(lambda: not OrmQ.objects.exists(), timeout=10), "acknowledged after its last attempt"
    failure = Failure.objects.get(group="qtest_fails")  # the admin's "Failed tasks"
    assert failure.attempt_count == 3
    assert "JobFailed: qtest_fails: it always fails" in failure.result
    attempts = [line.split() for line in notes(redis_client, "fails")]
    assert {actor for actor, _, _ in attempts} == {"system:scheduler"}
    assert len({request_id for _, request_id, _ in attempts}) == 3, "a request id per run"
    assert runs("qtest_fails") == {"failed": 3}
    # Nothing more: the fourth hand-out never comes.
    assert not wait_for(lambda: len(notes(redis_client, "fails")) > 3, timeout=4, interval=0.5)


def test_two_clusters_never_run_the_same_job_at_once(clusters, redis_client):
    redis_client.set(key("qtest", "slow_seconds"), "2")
    clusters.start("one")
    clusters.start("two")
    for _ in range(4):
        async_task(ENTRY, "qtest_slow", q_options={"timeout": 5})

    assert wait_for(lambda: Task.objects.count() == 4, timeout=60, interval=0.2), clusters.log("one")
    assert Failure.objects.count() == 0
    spans = []
    lines = notes(redis_client, "slow")
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert (start.split()[0], end.split()[0]) == ("start", "end"), lines
        spans.append((float(start.split()[1]), float(end.split()[1])))
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans)), spans
    counted = runs("qtest_slow")
    assert counted.get("done", 0) == len(spans) >= 1
    assert counted.get("locked", 0) == 4 - len(spans) >= 1, "the other cluster took one while a run was going on"
    assert sorted(task.result.split(":")[0] for task in Task.objects.all()) == sorted(
        ["done"] * counted["done"] + ["locked"] * counted["locked"]
    )


def test_a_task_whose_cluster_was_killed_is_run_again_by_another(clusters, redis_client):
    redis_client.set(key("qtest", "slow_seconds"), "3")
    # retry must outlast the job's lock (timeout 5 s + the margin), as sync_schedules insists.
    first = clusters.start("one", MUTT_SCHEDULER_RETRY_SECONDS="16")
    async_task(ENTRY, "qtest_slow", q_options={"timeout": 5})
    assert wait_for(lambda: notes(redis_client, "slow") != [], timeout=30, interval=0.1), clusters.log("one")
    clusters.kill(first)  # mid-run: no result, no acknowledgement

    clusters.start("two", MUTT_SCHEDULER_RETRY_SECONDS="16")
    assert wait_for(Success.objects.exists, timeout=60, interval=0.5), clusters.log("two")
    lines = notes(redis_client, "slow")
    assert [line.split()[0] for line in lines] == ["start", "start", "end"], "cut short once, then run whole"
    assert not OrmQ.objects.exists()
    assert runs("qtest_slow") == {"done": 1}


def test_a_killed_qcluster_takes_the_processes_it_forked_with_it(clusters):
    import psutil

    cluster = clusters.start("one")
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == cluster.pid]
    assert len(group) >= 5, "qcluster, its sentinel, a worker, the pusher and the monitor"
    os.kill(cluster.pid, signal.SIGKILL)  # the OOM killer's way: the others get no signal from anyone
    cluster.wait(timeout=10)

    def left() -> list[int]:
        return [p.pid for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    assert wait_for(lambda: left() == [], timeout=10, interval=0.2), f"left running: {left()}"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
