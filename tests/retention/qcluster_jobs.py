"""Test-only jobs, and a real django-q2 cluster that knows them: ``python -m tests.retention.qcluster_jobs``.

The cluster forks its workers from this process, so jobs declared here are in their registry as a
job of any app is. Each notes what it did in Redis (this test run's prefix, from the environment), for
the test to read. Never imported by the test process itself: the names would be declared twice.
"""

from __future__ import annotations

import os
import sys
import time

import django

if __name__ == "__main__":
    sys.argv = ["manage.py", "qcluster"]  # what retention's app config looks for, as under `manage.py qcluster`
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mutt_project.settings")
django.setup()

from core.audit import Actor  # noqa: E402  (Django is set up first)
from core.context import get_request_id  # noqa: E402
from core.jobs import JobOutcome, JobResult, job  # noqa: E402
from core.redis import get_redis, key  # noqa: E402


def notes_key(name: str) -> str:
    return key("qtest", name)


def note(name: str, text: str) -> None:
    get_redis().rpush(notes_key(name), text)


@job("qtest_fails", every=3600.0, timeout=2.0, help="Always ends failed (tests).")
def fails(actor: Actor) -> JobResult:
    note("fails", f"{actor.label} {get_request_id()} {os.getpid()}")
    return JobResult(JobOutcome.FAILED, "it always fails")


@job("qtest_slow", every=3600.0, timeout=5.0, help="Takes a while (tests): seconds from the key qtest:slow_seconds.")
def slow(actor: Actor) -> JobResult:
    seconds = float(get_redis().get(notes_key("slow_seconds")) or 2)
    note("slow", f"start {time.time()!r}")
    time.sleep(seconds)
    note("slow", f"end {time.time()!r}")
    return JobResult(JobOutcome.DONE, f"slept {seconds}s")


if __name__ == "__main__":
    from django.core.management import call_command

    call_command("qcluster")
