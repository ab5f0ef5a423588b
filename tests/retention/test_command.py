"""``manage.py retention``: plan, run, status and the archive's subcommands, their output and their errors."""

from __future__ import annotations

import io
import os
import pty
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from core import streams
from retention.models import RetentionRun, RunOutcome
from tests.support.retention_stores import fill_dlq, stream_ids

QUEUES = ("alerter", "moog", "dead")


@pytest.fixture
def dlqs(redis_client):
    names = [streams.dlq_stream(q) for q in QUEUES]
    redis_client.delete(*names)
    fill_dlq(redis_client, "alerter", [(40, "shed"), (35, "shed"), (33, "malformed"), (1, "shed")])
    yield redis_client
    redis_client.delete(*names)


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("retention", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_plan_prints_what_would_go_and_touches_nothing(dlqs):
    before = stream_ids(dlqs, "alerter")

    out, _ = command("plan", "--only", "dlq")

    header, row, footnote = out.splitlines()
    assert header.split() == ["POLICY", "STORE", "ACTION", "TARGET", "ROWS", "BYTES", "FROM", "TO", "NOTE"]
    assert row.split()[:5] == ["dlq", "dlq:alerter", "delete*", streams.dlq_stream("alerter"), "3"]
    assert (timezone.now() - timedelta(days=40)).strftime("%Y-%m-%d") in row
    assert "dlq_retention_days" in row
    assert footnote.startswith("* removes data: suspended while the legal hold")
    assert stream_ids(dlqs, "alerter") == before
    assert not RetentionRun.objects.exists()


@pytest.mark.django_db
def test_plan_says_so_when_there_is_nothing_to_do(redis_client):
    redis_client.delete(*[streams.dlq_stream(q) for q in QUEUES])
    out, _ = command("plan", "--only", "dlq")
    assert out.splitlines()[1].split() == ["dlq", "nothing", "to", "do"]


@pytest.mark.django_db
def test_run_deletes_records_and_reports_without_a_terminal(dlqs):
    out, err = command("run", "--only", "dlq", "--reason", "disk is filling", "--actor", "bob")

    run = RetentionRun.objects.get()
    assert (run.policy, run.actor, run.reason, run.outcome) == ("dlq", "cli:bob", "disk is filling", RunOutcome.DONE)
    lines = out.splitlines()
    assert lines[0] == "dlq dlq:alerter: 3 done"  # plain progress lines, no carriage returns
    assert lines[-1] == f"dlq: done: 0 rows archived, 3 deleted (malformed 1, shed 2); run #{run.pk}"
    assert "\r" not in out
    assert err == ""
    assert len(stream_ids(dlqs, "alerter")) == 1


@pytest.mark.django_db
def test_a_dry_run_says_what_it_would_do_and_does_nothing(dlqs):
    out, _ = command("run", "--only", "dlq", "--dry-run", "--reason", "rehearsal")

    assert "dlq: done (dry run): 0 rows archived, 0 deleted" in out
    assert f"  would delete 3 from dlq:alerter ({streams.dlq_stream('alerter')})" in out
    assert len(stream_ids(dlqs, "alerter")) == 4
    assert RetentionRun.objects.get().dry_run


@pytest.mark.django_db
def test_run_shows_a_progress_bar_on_a_terminal(dlqs):
    primary, secondary = pty.openpty()
    with os.fdopen(secondary, "w") as terminal:
        call_command("retention", "run", "--only", "dlq", "--reason", "at the console", stdout=terminal)
    chunks = []
    while True:  # a pty hands its output back a write at a time; EIO once all is read (the writer closed)
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    shown = b"".join(chunks).decode()

    assert "\rdlq dlq:alerter: 3 done" in shown
    assert "dlq: done: 0 rows archived, 3 deleted" in shown


@pytest.mark.django_db
def test_a_failed_policy_makes_the_command_fail_after_reporting_it(dlqs):
    dlqs.set(streams.dlq_stream("dead"), "not a stream")
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="retention failed for dlq"):
        call_command("retention", "run", "--only", "dlq", "--reason", "nightly", stdout=out, stderr=err)

    # (Redis 7 names the command at fault; the embedded 6.2 names the script first)
    assert err.getvalue().startswith("dlq: failed: ResponseError: ")
    assert "WRONGTYPE" in err.getvalue()
    assert RetentionRun.objects.get().outcome == RunOutcome.FAILED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--only", "dlq"], "the following arguments are required: --reason"),
        (["run", "--reason", "  ", "--only", "dlq"], "--reason: say why retention runs"),
        (["run", "--reason", "x", "--only", "logs"], "argument --only: invalid choice: 'logs'"),
        (["plan", "--only", "logs"], "argument --only: invalid choice: 'logs'"),
        (["restore", "--from", "2026-13", "--to", "2026-12", "--reason", "r"], "--from: expected a month as YYYY-MM"),
        (["restore", "--from", "2026-01", "--to", "26-2", "--reason", "r"], "--to: expected a month as YYYY-MM"),
        (["restore", "--from", "2026-03", "--to", "2026-01", "--reason", "r"], "is after --to (2026-01)"),
        (["restore", "--from", "2026-01", "--to", "2026-01"], "the following arguments are required: --reason"),
        (["restore", "--to", "2026-01"], "the following arguments are required: --from"),
        (["vacuum"], "invalid choice: 'vacuum'"),
    ],
)
def test_bad_input_is_refused_naming_the_option(args, message):
    with pytest.raises(CommandError) as refused:
        command(*args)
    assert message in str(refused.value)
    assert not RetentionRun.objects.exists()


@pytest.mark.django_db
def test_status_shows_the_hold_the_last_runs_and_the_next_schedules(dlqs):
    from django_q.models import Schedule

    command("run", "--only", "dlq", "--reason", "first")
    due = timezone.now() + timedelta(hours=3)
    # The schedule made from the job registry after migrate, moved by an operator.
    Schedule.objects.filter(name="retention_dlq").update(next_run=due)

    out, _ = command("status")

    lines = out.splitlines()
    assert lines[0] == "Legal hold: off"
    assert next(line for line in lines if line.startswith("dlq_retention_days")).split() == [
        "dlq_retention_days", "30", "days"
    ]  # fmt: skip
    dlq_line = next(line for line in lines if line.startswith("dlq "))
    assert dlq_line.split()[1] == "done"
    assert "cli:" in dlq_line
    assert next(line for line in lines if line.startswith("history ")).split()[1:] == ["never", "run"]
    schedule_line = next(line for line in lines if line.startswith("retention_dlq"))
    assert due.strftime("%Y-%m-%d %H:%M") in schedule_line
