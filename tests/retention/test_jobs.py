"""The job runner every run goes through: never twice at once, a request id per run, failures counted."""

from __future__ import annotations

import logging
import threading

import pytest
from django.core.management import CommandError, call_command

from core.audit import Actor
from core.context import get_request_id
from core.jobs import Job, JobOutcome, JobResult, UnknownJob, get_job, registry
from retention import job_metrics
from retention.runner import LOCK_MARGIN_SECONDS, JobRunner, lock_key

ACTOR = Actor.system("job-tests")


@pytest.fixture(autouse=True)
def _no_job_state(no_job_state):
    return


def runs(job: str) -> dict[str, int]:
    counts, _ = job_metrics.read(job_metrics.get_redis())
    return {outcome: count for (name, outcome), count in counts.items() if name == job}


def test_a_run_has_its_actor_a_request_id_of_its_own_and_is_counted(redis_client):
    seen: list[tuple[str, str]] = []

    def run(actor: Actor) -> JobResult:
        seen.append((actor.label, get_request_id()))
        return JobResult(JobOutcome.DONE, "counted")

    job = Job("test-once", 60.0, run, "notes its runs")
    runner = JobRunner(actor=ACTOR, clock=lambda: 1_900_000_000.0)
    assert runner.run_now(job).outcome is JobOutcome.DONE
    assert runner.run_now(job).outcome is JobOutcome.DONE
    assert [label for label, _ in seen] == ["system:job-tests"] * 2
    assert len(seen[0][1]) == len(seen[1][1]) == 32
    assert seen[0][1] != seen[1][1], "a fresh request id per run"
    assert get_request_id() == "", "and none left behind"
    assert runs("test-once") == {"done": 2}
    assert job_metrics.read(redis_client)[1]["test-once"] == 1_900_000_000.0
    assert redis_client.ttl(lock_key(job)) == -2, "the lock is released after the run"


def test_two_runs_of_a_job_never_overlap(redis_client):
    started, release = threading.Event(), threading.Event()

    def slow(actor: Actor) -> JobResult:
        started.set()
        release.wait(10)
        return JobResult(JobOutcome.IDLE, "waited")

    job = Job("test-slow", 60.0, slow, "waits to be released", timeout=30.0)
    first = threading.Thread(target=JobRunner(actor=ACTOR).run_now, args=(job,))
    first.start()
    try:
        assert started.wait(10)
        # Held past the job's timeout: the cluster kills an overrunning worker before the lock frees it.
        assert 30 < redis_client.ttl(lock_key(job)) <= 30 + LOCK_MARGIN_SECONDS
        result = JobRunner(actor=Actor.cli("ops")).run_now(job)
        assert (result.outcome, result.summary) == (JobOutcome.LOCKED, "another run holds its lock")
    finally:
        release.set()
        first.join(10)
    assert runs("test-slow") == {"idle": 1, "locked": 1}
    assert "test-slow" in job_metrics.read(redis_client)[1], "idle is a success"


def test_a_job_that_raises_is_logged_and_counted_failed(caplog, redis_client):
    def broken(actor: Actor) -> JobResult:
        raise RuntimeError("disk on fire")

    job = Job("test-boom", 300.0, broken, "raises")
    result = JobRunner(actor=ACTOR).run_now(job)

    assert (result.outcome, result.summary) == (JobOutcome.FAILED, "raised RuntimeError: disk on fire")
    assert runs("test-boom") == {"failed": 1}
    assert "test-boom" not in job_metrics.read(redis_client)[1], "a failure is no success"
    raised = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert [r.getMessage() for r in raised] == ["job test-boom raised"]
    assert not redis_client.exists(lock_key(job))


def test_a_run_interrupted_by_the_cluster_timeout_is_counted_failed_and_frees_the_lock(redis_client):
    def overran(actor: Actor) -> JobResult:
        raise SystemExit("timed out")  # what django-q2's timeout raises in the worker (TimeoutException)

    job = Job("test-overran", 300.0, overran, "interrupted")
    with pytest.raises(SystemExit):
        JobRunner(actor=ACTOR).run_now(job)
    assert runs("test-overran") == {"failed": 1}
    assert not redis_client.exists(lock_key(job))


def test_jobs_declared_in_the_apps_are_found():
    assert registry()["audit_partitions"].interval == 3600.0
    with pytest.raises(UnknownJob):
        get_job("no-such-job")


@pytest.mark.django_db
def test_run_job_runs_one_job_by_name_lists_them_with_their_schedules_and_waits_for_a_held_lock(capsys, redis_client):
    call_command("run_job", "audit_partitions")
    assert capsys.readouterr().out.startswith("audit_partitions: ")
    assert sum(runs("audit_partitions").values()) == 1
    call_command("run_job", "--list")
    listed = capsys.readouterr().out
    assert "audit_partitions  every 3600s  next run " in listed, listed
    from django_q.models import Schedule

    Schedule.objects.filter(name="audit_partitions").update(name="partitions (renamed by an operator)")
    call_command("run_job", "--list")
    assert "audit_partitions  every 3600s  next run " in capsys.readouterr().out, "a renamed schedule is its job's"
    with pytest.raises(CommandError, match="no job named 'nope'"):
        call_command("run_job", "nope")

    job = get_job("audit_partitions")
    lock = redis_client.lock(lock_key(job), timeout=30, blocking=False)
    assert lock.acquire()  # a scheduled run in progress
    try:
        with pytest.raises(CommandError, match="audit_partitions locked"):
            call_command("run_job", "audit_partitions")
    finally:
        lock.release()


@pytest.mark.django_db(transaction=True)
def test_the_database_stops_a_statement_running_past_the_jobs_timeout_and_the_setting_ends_with_the_run():
    # A signal cannot interrupt psycopg2 waiting on PostgreSQL; the database's statement_timeout can.
    import time

    from django.db import connection

    def blocks(actor: Actor) -> JobResult:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
        return JobResult(JobOutcome.DONE, "slept")

    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '7min'")  # the connection's own, for its other users
    job = Job("test-blocks", 60.0, blocks, "blocks in PostgreSQL past its timeout", timeout=1.0)
    started = time.monotonic()
    result = JobRunner(actor=ACTOR).run_now(job)

    assert time.monotonic() - started < 3
    assert result.outcome == JobOutcome.FAILED
    assert "statement timeout" in result.summary
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("7min",), "the connection's other users keep their own"
        cursor.execute("RESET statement_timeout")
