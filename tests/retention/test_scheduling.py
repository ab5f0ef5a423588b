"""Schedules made from the job registry (once, never overwritten) and the task every schedule runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule, Task

from core import jobs as core_jobs
from core.audit import Actor
from core.context import get_request_id
from core.jobs import Job, JobOutcome, JobResult, get_job, registry
from retention import job_metrics
from retention.runner import lock_key
from retention.scheduling import ENTRY, JobFailed, run_scheduled, sync_schedules

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_job_state(no_job_state):
    return


def noop(actor: Actor) -> JobResult:
    return JobResult(JobOutcome.IDLE, "nothing")


def ours() -> dict[str, Schedule]:
    return {s.name: s for s in Schedule.objects.filter(func=ENTRY)}


def test_every_job_gets_one_schedule_once_and_a_second_sync_changes_nothing():
    Schedule.objects.all().delete()
    jobs = [get_job("audit_partitions"), Job("test-daily", 86400.0, noop, "daily", timeout=60.0)]

    first = sync_schedules(jobs)
    assert first.created == ["audit_partitions", "test-daily"]
    made = ours()
    assert (made["audit_partitions"].schedule_type, made["audit_partitions"].minutes) == (Schedule.MINUTES, 60)
    assert made["test-daily"].minutes == 1440
    assert made["audit_partitions"].args == "'audit_partitions'"
    assert made["audit_partitions"].kwargs == "{'q_options': {'timeout': 600}}"
    assert made["audit_partitions"].next_run <= timezone.now(), "due at once"
    assert made["audit_partitions"].repeats == -1

    again = sync_schedules(jobs)
    assert (again.created, again.removed, again.kept) == ([], [], ["audit_partitions", "test-daily"])
    assert Schedule.objects.count() == 2


def test_an_operators_edits_survive_a_sync_and_a_schedule_whose_job_is_gone_is_removed():
    Schedule.objects.all().delete()
    jobs = [get_job("audit_partitions"), Job("test-gone", 600.0, noop, "removed later", timeout=60.0)]
    sync_schedules(jobs)
    later = timezone.now() + timedelta(days=3)
    Schedule.objects.filter(name="audit_partitions").update(minutes=15, next_run=later, repeats=0)  # paused
    operators_own = Schedule.objects.create(name="cleanup", func="django.core.management.call_command", args="'check'")

    report = sync_schedules(jobs[:1])

    assert report.removed == ["test-gone"]
    assert report.created == []
    assert report.differs == ["audit_partitions"], "said, not changed"
    kept = Schedule.objects.get(name="audit_partitions")
    assert (kept.minutes, kept.next_run, kept.repeats) == (15, later, 0)
    assert Schedule.objects.filter(pk=operators_own.pk).exists(), "schedules of other functions are not ours"


def test_a_sync_gives_an_existing_schedule_the_jobs_current_timeout_and_keeps_the_operators_settings(caplog):
    # The job's Redis lock is sized from its timeout now; a schedule left with the old timeout would
    # let the cluster kill a run early, or let a run outlive its lock.
    Schedule.objects.all().delete()
    sync_schedules([Job("test-retimed", 600.0, noop, "timeout changes", timeout=60.0)])
    later = timezone.now() + timedelta(days=3)
    Schedule.objects.filter(name="test-retimed").update(
        minutes=15, next_run=later, repeats=0, kwargs="{'q_options': {'timeout': 60, 'ack_failure': True}}"
    )

    report = sync_schedules([Job("test-retimed", 600.0, noop, "timeout changes", timeout=300.0)])

    assert report.retimed == ["test-retimed"]
    kept = Schedule.objects.get(name="test-retimed")
    assert kept.kwargs == "{'q_options': {'timeout': 300, 'ack_failure': True}}"
    assert (kept.minutes, kept.next_run, kept.repeats) == (15, later, 0), "the operator's, still"
    assert any("timeout set to the job's 300s" in r.getMessage() for r in caplog.records)
    assert sync_schedules([Job("test-retimed", 600.0, noop, "same", timeout=300.0)]).retimed == []


def test_a_renamed_schedule_is_still_its_jobs_and_a_second_schedule_of_one_job_is_removed(caplog):
    Schedule.objects.all().delete()
    jobs = [Job("test-renamed", 600.0, noop, "renamed in the admin", timeout=60.0)]
    sync_schedules(jobs)
    Schedule.objects.filter(name="test-renamed").update(name="nightly clean-up", minutes=30)

    report = sync_schedules(jobs)
    assert report.created == []
    assert [s.name for s in Schedule.objects.filter(func=ENTRY)] == ["nightly clean-up"], "renamed, not doubled"
    assert report.kept == ["test-renamed"]

    first = Schedule.objects.get(func=ENTRY)
    second = Schedule.objects.create(name="test-renamed", func=ENTRY, args="'test-renamed'", minutes=10)
    report = sync_schedules(jobs)
    assert report.duplicates == [f"test-renamed (#{second.pk})"]
    assert list(Schedule.objects.filter(func=ENTRY).values_list("pk", flat=True)) == [first.pk], "one run per job"
    assert any("a second schedule of a job" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_a_deleted_schedule_comes_back_with_sync_schedules(capsys, caplog):
    Schedule.objects.filter(func=ENTRY).delete()
    call_command("sync_schedules")
    assert "created: audit_partitions" in capsys.readouterr().out
    logged = [r for r in caplog.records if r.name == "mutt.jobs" and "created by" in r.getMessage()]
    assert len(logged) == len(registry()), "one line per schedule made"
    assert {r.actor for r in logged} == {Actor.cli().label}, "who made it is in the log"
    call_command("sync_schedules")
    assert "kept: audit_partitions" in capsys.readouterr().out


def test_migrate_makes_the_schedules():
    Schedule.objects.filter(func=ENTRY).delete()
    call_command("migrate", verbosity=0)
    assert "audit_partitions" in ours()


def test_a_job_whose_timeout_outlasts_the_clusters_retry_is_refused():
    long = Job("test-long", 3600.0, noop, "too long", timeout=3595.0)
    with pytest.raises(ImproperlyConfigured, match=r"test-long \(3595s\)"):
        sync_schedules([long])
    assert "test-long" not in ours()


@pytest.fixture
def declared(monkeypatch):
    """Declare test jobs in the registry for the length of a test."""

    def declare(job: Job) -> Job:
        core_jobs.registry()  # discovered first, so the apps' jobs are not imported over it later
        monkeypatch.setitem(core_jobs._jobs, job.name, job)
        return job

    return declare


def test_the_scheduled_task_runs_the_job_as_the_scheduler_with_a_request_id(declared):
    seen: list[tuple[str, str]] = []

    def run(actor: Actor) -> JobResult:
        seen.append((actor.label, get_request_id()))
        return JobResult(JobOutcome.DONE, "did it")

    declared(Job("test-task", 60.0, run, "notes its actor"))
    assert run_scheduled("test-task") == "done: did it"
    assert seen[0][0] == "system:scheduler"
    assert len(seen[0][1]) == 32, "a request id of its own"


def test_a_failed_run_raises_for_django_q_to_record_and_retry_it_and_a_locked_one_does_not(declared, redis_client):
    def fails(actor: Actor) -> JobResult:
        return JobResult(JobOutcome.FAILED, "could not")

    def raises(actor: Actor) -> JobResult:
        raise ValueError("bad row")

    declared(Job("test-fails", 60.0, fails, "fails"))
    declared(Job("test-raises", 60.0, raises, "raises"))
    with pytest.raises(JobFailed, match="test-fails: could not"):
        run_scheduled("test-fails")
    with pytest.raises(JobFailed, match="test-raises: raised ValueError: bad row"):
        run_scheduled("test-raises")

    redis_client.set(lock_key(get_job("test-fails")), "someone", ex=30)
    assert run_scheduled("test-fails") == "locked: another run holds its lock", "running elsewhere: nothing to retry"
    counts, _ = job_metrics.read(redis_client)
    assert counts == {("test-fails", "failed"): 1, ("test-raises", "failed"): 1, ("test-fails", "locked"): 1}


def test_a_failed_scheduled_run_makes_its_task_due_after_the_failure_delay_not_retry(declared, settings):
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from retention.scheduling import remember_task

    settings.MUTT_SCHEDULER_FAILURE_RETRY_SECONDS = 300
    declared(Job("test-fails", 60.0, lambda actor: JobResult(JobOutcome.FAILED, "could not"), "fails"))
    declared(Job("test-fine", 60.0, noop, "idle"))
    failing, fine = async_task(ENTRY, "test-fails"), async_task(ENTRY, "test-fine")
    rows = {row.task_id(): row for row in OrmQ.objects.all()}
    taken = timezone.now() + timedelta(seconds=3600)  # as a cluster takes a task: due again after `retry`
    OrmQ.objects.update(lock=taken)

    remember_task("django_q", run_scheduled, {"ack_id": rows[fine].pk})
    run_scheduled("test-fine")
    remember_task("django_q", run_scheduled, {"ack_id": rows[failing].pk})
    with pytest.raises(JobFailed):
        run_scheduled("test-fails")

    assert OrmQ.objects.get(pk=rows[fine].pk).lock == taken, "a success is acknowledged by the cluster"
    soon = OrmQ.objects.get(pk=rows[failing].pk).lock - timezone.now()
    assert timedelta(seconds=290) < soon <= timedelta(seconds=300)


def test_a_scheduled_run_that_cannot_reach_redis_fails_and_is_retried_as_soon(declared, settings):
    import redis
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from core.redis import reset_clients
    from retention.scheduling import remember_task

    calls: list[str] = []

    def run(actor: Actor) -> JobResult:
        calls.append("ran")
        return JobResult(JobOutcome.DONE, "ran")

    declared(Job("test-no-redis", 60.0, run, "needs its lock"))
    async_task(ENTRY, "test-no-redis")
    row = OrmQ.objects.get()
    OrmQ.objects.update(lock=timezone.now() + timedelta(seconds=3600))
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        remember_task("django_q", run_scheduled, {"ack_id": row.pk})
        with pytest.raises(redis.ConnectionError):
            run_scheduled("test-no-redis")
    finally:
        reset_clients()
    assert calls == [], "not run without its lock"
    assert OrmQ.objects.get().lock - timezone.now() <= timedelta(seconds=300)


def test_run_job_stops_a_run_at_its_timeout_so_it_never_outlives_the_lock(declared, redis_client):
    import time

    from django.core.management import CommandError

    def sleeps(actor: Actor) -> JobResult:
        time.sleep(5)
        return JobResult(JobOutcome.DONE, "slept")

    declared(Job("test-overruns", 60.0, sleeps, "sleeps past its timeout", timeout=1.0))
    started = time.monotonic()
    with pytest.raises(CommandError, match="test-overruns failed"):
        call_command("run_job", "test-overruns")
    assert time.monotonic() - started < 3
    assert not redis_client.exists(lock_key(get_job("test-overruns")))
    counts, _ = job_metrics.read(redis_client)
    assert counts == {("test-overruns", "failed"): 1}


def test_metrics_and_the_admin_show_the_jobs_schedules_and_failures(admin_client_alice, redis_client):
    job_metrics.record(redis_client, "audit_partitions", "done", 1_900_000_000.0)
    job_metrics.record(redis_client, "audit_partitions", "failed", 1_900_000_100.0)
    text = admin_client_alice.get("/metrics").content.decode()
    assert 'mutt_job_runs_total{job="audit_partitions",outcome="done"} 1.0' in text
    assert 'mutt_job_runs_total{job="audit_partitions",outcome="failed"} 1.0' in text
    assert 'mutt_job_last_success_timestamp_seconds{job="audit_partitions"} 1.9e+09' in text
    assert text.count('mutt_job_runs_total{job="audit_partitions",outcome="done"}') == 1, "exported once"
    # A worker's metrics port serves the global registry (the workers import the URL conf for their
    # system checks): the jobs are not there, or a sum over scrape targets would count each run again.
    from prometheus_client import REGISTRY, generate_latest

    assert b"mutt_job_runs_total" not in generate_latest(REGISTRY)

    sync_schedules()
    assert "audit_partitions" in admin_client_alice.get("/admin/django_q/schedule/").content.decode()
    Task.objects.create(
        id="f" * 32, name="failed-one", func=ENTRY, args=("audit_partitions",), started=timezone.now(),
        stopped=timezone.now(), success=False, result="JobFailed: audit_partitions: could not",
        group="audit_partitions",
    )  # fmt: skip
    assert "failed-one" in admin_client_alice.get("/admin/django_q/failure/").content.decode()
