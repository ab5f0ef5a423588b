"""Jobs and their runners: once per interval across runners, never twice at once, failures retried."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from prometheus_client import REGISTRY

from core.audit import Actor
from core.jobs import Job, JobOutcome, JobResult, UnknownJob, get_job, registry
from core.redis import key
from retention.partitions import month_start, partition_name
from retention.runner import JobRunner, due_key, lock_key
from tests.support.waiting import wait_for

ACTOR = Actor.system("job-tests")


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_job_state(redis_client):
    def clean() -> None:
        names = list(redis_client.scan_iter(match=key("jobs", "*")))
        if names:
            redis_client.delete(*names)

    clean()
    yield
    clean()


def counting_job(name: str, calls: list[str], *, interval: float = 60.0) -> Job:
    def run(actor: Actor) -> JobResult:
        calls.append(actor.label)
        return JobResult(JobOutcome.DONE, "counted")

    return Job(name, interval, run, "counts its runs")


def runs(job: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("mutt_job_runs_total", {"job": job, "outcome": outcome}) or 0.0


def test_a_due_job_runs_once_per_interval_however_many_runners_there_are():
    calls: list[str] = []
    job = counting_job("test-once", calls)
    clock = Clock()
    first, second = JobRunner([job], actor=ACTOR, clock=clock), JobRunner([job], actor=ACTOR, clock=clock)

    assert [(ran.name, result.outcome) for ran, result in first.step()] == [("test-once", JobOutcome.DONE)]
    assert first.step() == []
    assert second.step() == [], "the other runner sees it ran"
    assert calls == ["system:job-tests"]
    assert second.seconds_until_next() == 60.0

    clock.now += 60
    assert [result.outcome for _, result in second.step()] == [JobOutcome.DONE]
    assert first.step() == []
    assert len(calls) == 2


def test_two_runners_never_run_the_same_job_at_once(redis_client):
    started, release = threading.Event(), threading.Event()

    def slow(actor: Actor) -> JobResult:
        started.set()
        release.wait(10)
        return JobResult(JobOutcome.IDLE, "waited")

    job = Job("test-slow", 60.0, slow, "waits to be released")
    locked_before = runs("test-slow", "locked")
    first = threading.Thread(target=JobRunner([job], actor=ACTOR).step)
    first.start()
    try:
        assert started.wait(10)
        other = JobRunner([job], actor=ACTOR)
        assert [result.outcome for _, result in other.step()] == [JobOutcome.LOCKED]
        assert other.run_now(job).outcome is JobOutcome.LOCKED, "an operator's run_job waits its turn too"
        assert other.seconds_until_next() == pytest.approx(60.0, abs=1)
    finally:
        release.set()
        first.join(10)
    assert runs("test-slow", "locked") == locked_before + 2
    assert not redis_client.exists(lock_key(job)), "the lock is released after the run"


def test_a_job_that_raises_is_logged_counted_and_retried_at_its_next_interval_and_the_loop_goes_on(caplog):
    attempts: list[int] = []

    def broken(actor: Actor) -> JobResult:
        attempts.append(1)
        raise RuntimeError("disk on fire")

    calls: list[str] = []
    boom, fine = Job("test-boom", 300.0, broken, "raises"), counting_job("test-fine", calls, interval=1000.0)
    clock = Clock()
    runner = JobRunner([boom, fine], actor=ACTOR, clock=clock)
    failed_before = runs("test-boom", "failed")

    outcomes = {job.name: result for job, result in runner.step()}

    assert outcomes["test-boom"].outcome is JobOutcome.FAILED
    assert outcomes["test-boom"].summary == "raised RuntimeError: disk on fire"
    assert outcomes["test-fine"].outcome is JobOutcome.DONE, "the next job still ran"
    assert runs("test-boom", "failed") == failed_before + 1
    raised = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert [r.getMessage() for r in raised] == ["job test-boom raised; it runs again in 300.0s"]
    clock.now += 299
    assert [job.name for job, _ in runner.step()] == []
    clock.now += 1
    assert [job.name for job, _ in runner.step()] == ["test-boom"]
    assert len(attempts) == 2


def test_an_operator_runs_a_job_now_even_when_it_is_not_due(redis_client):
    calls: list[str] = []
    job = counting_job("test-now", calls)
    clock = Clock()
    runner = JobRunner([job], actor=ACTOR, clock=clock)
    runner.step()
    assert JobRunner([job], actor=Actor.cli("ops"), clock=clock).run_now(job).outcome is JobOutcome.DONE
    assert calls == ["system:job-tests", "cli:ops"]
    assert float(redis_client.get(due_key(job))) == clock.now + 60, "its run counts as the latest"


def test_jobs_declared_in_the_apps_are_found():
    assert registry()["audit_partitions"].interval == 3600.0
    with pytest.raises(UnknownJob):
        get_job("no-such-job")


@pytest.mark.django_db
def test_run_job_runs_one_job_by_name_and_lists_them(capsys):
    call_command("run_job", "audit_partitions")
    assert capsys.readouterr().out.startswith("audit_partitions: ")
    call_command("run_job", "--list")
    assert "audit_partitions  every 3600s  " in capsys.readouterr().out
    with pytest.raises(CommandError, match="no job named 'nope'"):
        call_command("run_job", "nope")


@pytest.mark.django_db(transaction=True)
def test_the_run_jobs_worker_runs_due_jobs_and_stops_at_once_on_sigterm(redis_client, child_env):
    job = get_job("audit_partitions")
    manage = Path(settings.BASE_DIR) / "manage.py"
    process = subprocess.Popen(
        [sys.executable, str(manage), "run_jobs"], env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: redis_client.exists(due_key(job)), timeout=30), "the job ran"
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [partition_name(month_start(datetime.now(UTC).date(), 2))])
            assert cursor.fetchone()[0] is not None
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.communicate()[0].decode()
    assert "job audit_partitions" in output, output
