"""The retention orchestrator: run records, the legal hold, dry runs, plans, and failures kept to their policy."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from configcenter.models import DynamicSetting
from configcenter.settings_service import set_setting
from core import streams
from core.audit import Actor
from core.context import request_id_scope
from retention import service, stores
from retention.models import RetentionRun, RunOutcome
from retention.service import PolicyUnavailable, UnknownPolicy, plan, plan_each, run_retention
from rules import services as rule_services
from rules.models import DevHost
from tests.support.retention_stores import backdate_history, fill_dlq, fill_dlq_small, history_count, stream_ids
from tests.support.waiting import apply_setting, wait_for

OPS = Actor.cli("retention-tests")


@pytest.fixture
def old_data(redis_client):
    """Three DLQ entries and two history rows past their retention, one of each within it."""
    names = [streams.dlq_stream(q) for q in ("alerter", "moog", "dead")]
    redis_client.delete(*names)
    fill_dlq(redis_client, "alerter", [(40, "shed"), (35, "malformed"), (3, "shed")])
    fill_dlq(redis_client, "moog", [(31, "retries_exhausted")])
    host = rule_services.create(DevHost, actor=OPS, reason="lab", hostname="old.lab")
    for text in ("a", "b"):
        rule_services.update(host, actor=OPS, changes={"description": text}, reason="edit")
    backdate_history(DevHost, 400, hostname="old.lab")
    yield redis_client
    redis_client.delete(*names)


def untouched(client) -> tuple[list[str], int]:
    return stream_ids(client, "alerter") + stream_ids(client, "moog"), history_count(DevHost, hostname="old.lab")


@pytest.mark.django_db
def test_a_run_records_who_why_which_request_and_what_it_did(old_data):
    with request_id_scope("0123456789abcdef0123456789abcdef"):
        runs = run_retention(Actor.cli("alice"), "  quarterly clean-up  ", only=["history", "dlq"])

    assert [r.policy for r in runs] == ["dlq", "history"]  # the registry's order, whatever the caller's
    for run in runs:
        stored = RetentionRun.objects.get(pk=run.pk)
        assert (stored.actor, stored.reason, stored.request_id) == (
            "cli:alice", "quarterly clean-up", "0123456789abcdef0123456789abcdef"
        )  # fmt: skip
        assert stored.outcome == RunOutcome.DONE
        assert not stored.dry_run
        assert stored.finished_at is not None
        assert stored.started_at <= stored.finished_at <= timezone.now()
        assert stored.details["legal_hold"] is False
    assert [r.rows_deleted for r in runs] == [3, 2]


@pytest.mark.django_db
def test_runs_of_one_call_share_a_fresh_request_id_when_none_is_in_scope(old_data):
    first, second = run_retention(OPS, "check", only=["dlq", "history"])
    assert len(first.request_id) == 32
    assert first.request_id == second.request_id


@pytest.mark.django_db
def test_bad_input_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^reason: "):
        run_retention(OPS, "   ")
    with pytest.raises(UnknownPolicy, match="unknown retention policy 'logs'; choose one of events, archives"):
        run_retention(OPS, "x", only="logs")
    with pytest.raises(TypeError, match="actor must be an Actor"):
        run_retention("alice", "x")  # type: ignore[arg-type]
    assert not RetentionRun.objects.exists()


@pytest.mark.django_db
def test_a_dry_run_records_the_plan_and_touches_nothing(old_data):
    before = untouched(old_data)

    dlq, history = run_retention(OPS, "what would go?", only=["dlq", "history"], dry_run=True)

    assert untouched(old_data) == before
    assert (dlq.dry_run, dlq.outcome, dlq.rows_deleted) == (True, RunOutcome.DONE, 0)
    assert [(i["store"], i["rows"]) for i in dlq.details["plan"]] == [("dlq:alerter", 2), ("dlq:moog", 1)]
    assert dlq.details["plan"][0]["details"]["reasons"] == {"malformed": 1, "shed": 1}
    assert [(i["store"], i["rows"]) for i in history.details["plan"]] == [("history:rules.devhost", 2)]
    assert history.details["plan"][0]["end"]  # dates as ISO text: the details are JSON


@pytest.mark.django_db
def test_plan_says_what_each_policy_would_do_and_touches_nothing(old_data):
    before = untouched(old_data)
    runs_before = RetentionRun.objects.count()

    planned = plan(only=["dlq", "history"])

    assert {name: sum(i.rows or 0 for i in items) for name, items in planned.items()} == {"dlq": 3, "history": 2}
    assert untouched(old_data) == before
    assert RetentionRun.objects.count() == runs_before


@pytest.mark.django_db
def test_a_failing_policy_is_recorded_failed_and_the_others_still_run(old_data):
    # Something else wrote a plain string where the dead queue should be: reading it fails (WRONGTYPE).
    old_data.set(streams.dlq_stream("dead"), "not a stream")

    dlq, history = run_retention(OPS, "nightly", only=["dlq", "history"])

    assert dlq.outcome == RunOutcome.FAILED
    assert "WRONGTYPE" in dlq.error
    assert dlq.finished_at is not None
    assert RetentionRun.objects.get(pk=dlq.pk).outcome == RunOutcome.FAILED
    assert history.outcome == RunOutcome.DONE
    assert history.rows_deleted == 2


@pytest.mark.django_db
def test_a_policy_whose_module_is_missing_fails_clearly_and_alone(old_data, monkeypatch):
    monkeypatch.setitem(service.POLICIES, "ghost", "retention.nowhere.GhostPolicy")

    runs = run_retention(OPS, "nightly", only=["ghost", "history"])

    ghost = next(r for r in runs if r.policy == "ghost")
    assert ghost.outcome == RunOutcome.FAILED
    assert "policy 'ghost' is not available: retention.nowhere.GhostPolicy cannot be imported" in ghost.error
    assert next(r for r in runs if r.policy == "history").outcome == RunOutcome.DONE
    assert isinstance(plan_each(only=["ghost"])["ghost"], PolicyUnavailable)
    with pytest.raises(PolicyUnavailable, match=r"retention\.nowhere\.GhostPolicy"):
        plan(only="ghost")


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_one_policy_never_overlap_and_the_second_is_no_failure(old_data):
    from core.jobs import JobOutcome, get_job
    from retention.metrics import run_totals

    held, release = threading.Event(), threading.Event()
    theirs: list[RetentionRun] = []

    def other_run() -> None:  # another process's run in progress: the policy's lock and its record
        from django.db import connection as own

        with service._policy_lock("dlq"):
            theirs.append(RetentionRun.objects.create(policy="dlq", actor="system:scheduler", reason="daily"))
            held.set()
            release.wait(10)
            RetentionRun.objects.filter(pk=theirs[0].pk).update(outcome=RunOutcome.IDLE, finished_at=timezone.now())
        own.close()

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        assert held.wait(10)
        (busy,) = run_retention(OPS, "while another runs", only="dlq")
        job = get_job("retention_dlq").run(Actor.system("scheduler"))
        running = RetentionRun.objects.get(pk=theirs[0].pk)
        totals = run_totals()["dlq"]
    finally:
        release.set()
        thread.join()
    (after,) = run_retention(OPS, "after it", only="dlq")

    # An operator's run overlapping the daily job's is two asks at once, not a failure: no error counted,
    # no failed task for django-q2 to retry, and the run in progress is left alone.
    note = "another run of dlq is in progress"
    assert (busy.outcome, busy.details, busy.error) == (RunOutcome.IDLE, {"busy": note}, "")
    assert (job.outcome, job.summary) == (JobOutcome.IDLE, note)
    assert running.outcome == RunOutcome.RUNNING, "not taken for interrupted by a run that did not hold the lock"
    assert not RetentionRun.objects.filter(outcome=RunOutcome.FAILED).exists()
    assert (totals["failed"], totals["last_success"]) == (0.0, 0.0), "neither an error nor a success"
    assert after.outcome == RunOutcome.DONE
    assert after.rows_deleted == 3


@pytest.mark.django_db(transaction=True)
def test_the_legal_hold_suspends_every_deletion_and_its_changes_are_audited(old_data):
    before = untouched(old_data)
    apply_setting("retention_legal_hold", True, reason="litigation hold, matter 2026-114")

    dlq, history = run_retention(OPS, "nightly", only=["dlq", "history"])

    assert untouched(old_data) == before
    assert (dlq.outcome, history.outcome) == (RunOutcome.HELD, RunOutcome.HELD)
    assert dlq.details["legal_hold"] is True
    assert dlq.rows_deleted == 0
    assert [(i["store"], i["rows"]) for i in dlq.details["held"]] == [("dlq:alerter", 2), ("dlq:moog", 1)]
    assert history.details["held"][0]["rows"] == 2
    # The hold's history: who set it, when and why, as for any runtime setting.
    (change,) = DynamicSetting.history.filter(key="retention_legal_hold", value=True)
    assert (change.history_actor, change.history_change_reason) == ("cli:test", "litigation hold, matter 2026-114")
    assert service.legal_hold()["on"] is True
    assert service.legal_hold()["reason"] == "litigation hold, matter 2026-114"

    set_setting("retention_legal_hold", False, actor=Actor.cli("counsel"), reason="matter closed")
    apply_setting("retention_legal_hold", False, reason="matter closed")
    dlq, history = run_retention(OPS, "nightly", only=["dlq", "history"])

    assert (dlq.outcome, dlq.rows_deleted, history.rows_deleted) == (RunOutcome.DONE, 3, 2)
    assert DynamicSetting.history.filter(key="retention_legal_hold").first().history_actor == "cli:counsel"


@pytest.mark.django_db
def test_last_runs_and_schedules_for_the_status_pages(old_data):
    run_retention(OPS, "real", only="dlq")
    run_retention(OPS, "rehearsal", only="dlq", dry_run=True)

    latest, including_dry_runs = service.last_runs(), service.last_runs(dry_run=None)
    assert latest["history"] is None
    assert latest["dlq"] is not None
    assert latest["dlq"].reason == "real"
    assert including_dry_runs["dlq"] is not None
    assert including_dry_runs["dlq"].reason == "rehearsal"
    assert isinstance(service.schedules(), list)
    with connection.cursor() as cursor:  # django-q's table exists: the list reads it
        cursor.execute("SELECT to_regclass('django_q_schedule')")
        assert cursor.fetchone()[0] is not None


@pytest.mark.django_db
def test_the_daily_jobs_run_their_policy_as_the_scheduler(old_data):
    from core.jobs import JobOutcome, get_job, registry

    scheduler = Actor.system("scheduler")
    result = get_job("retention_dlq").run(scheduler)
    again = get_job("retention_dlq").run(scheduler)

    run = RetentionRun.objects.filter(policy="dlq").order_by("id").first()
    assert run is not None
    assert (run.actor, run.reason) == ("system:scheduler", "job retention_dlq")
    assert result.outcome == JobOutcome.DONE
    assert result.details["rows_deleted"] == 3
    assert again.outcome == JobOutcome.IDLE  # nothing left that old
    assert {"retention_events", "retention_archives", "retention_history"} <= set(registry())
    old_data.set(streams.dlq_stream("dead"), "not a stream")
    failed = get_job("retention_dlq").run(scheduler)
    assert failed.outcome == JobOutcome.FAILED
    assert "WRONGTYPE" in failed.summary


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_half_way_keeps_the_counts_of_what_it_removed_and_the_next_run_finishes(redis_client, child_env):
    stream = streams.dlq_stream("alerter")
    redis_client.delete(stream)
    total = 200_000
    fill_dlq_small(redis_client, "alerter", total, age_days=45, reason="shed")
    child = subprocess.Popen(
        [sys.executable, "manage.py", "retention", "run", "--only", "dlq", "--reason", "to be killed"],
        cwd=Path(__file__).resolve().parents[2], env=child_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(lambda: RetentionRun.objects.filter(rows_deleted__gt=0).exists(), timeout=60)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    killed = RetentionRun.objects.get()
    removed = total - redis_client.xlen(stream)

    assert killed.outcome == RunOutcome.RUNNING  # what a killed process leaves behind
    assert 0 < removed < total  # it was killed half-way
    # Saved after every batch: at most the batch in hand went uncounted.
    assert killed.rows_deleted <= removed <= killed.rows_deleted + stores.DLQ_BATCH
    assert killed.details["streams"]["dlq:alerter"]["reasons"] == {"shed": killed.rows_deleted}

    (finisher,) = run_retention(OPS, "the next night", only="dlq")

    killed.refresh_from_db()
    assert killed.outcome == RunOutcome.FAILED
    assert killed.error.startswith("interrupted: the process running it ended before it finished")
    assert finisher.outcome == RunOutcome.DONE
    assert redis_client.xlen(stream) == 0
    assert finisher.rows_deleted == total - removed
    redis_client.delete(stream)


@pytest.mark.django_db(transaction=True)
def test_a_hold_set_during_a_run_stops_it_within_a_batch(redis_client):
    stream = streams.dlq_stream("alerter")
    redis_client.delete(stream)
    total = 100_000
    fill_dlq_small(redis_client, "alerter", total, age_days=45, reason="shed")
    errors: list[BaseException] = []

    def counsel() -> None:  # another person, elsewhere, while the nightly run deletes
        from django.db import connection as own

        try:
            assert wait_for(lambda: RetentionRun.objects.filter(rows_deleted__gt=0).exists(), timeout=30)
            set_setting("retention_legal_hold", True, actor=Actor.cli("counsel"), reason="subpoena received")
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    thread = threading.Thread(target=counsel)
    thread.start()
    try:
        (run,) = run_retention(OPS, "nightly", only="dlq")
    finally:
        thread.join()

    assert errors == []
    removed = total - redis_client.xlen(stream)
    assert run.outcome == RunOutcome.HELD
    assert "hold_started" in run.details
    assert 0 < removed < total
    assert run.rows_deleted == removed  # every batch it did is counted; none after the hold
    redis_client.delete(stream)
