"""Scheduled work as named jobs: the pattern every periodic task follows, the registry, and the jobs.

A job is a plain callable with a name and an interval: ``run(actor)`` does the work once and returns a
:class:`JobResult` saying what it did. It holds no schedule, lock or loop of its own: django-q2's cluster
calls it when its schedule is due (made from this registry, ADR-012 and ADR-014), an operator with
``run_job NAME``. Jobs must be idempotent: a run cut short is run again, whole, by a retry or at the
next interval.

A job is declared with :func:`job` in a ``jobs`` module of any installed app; :func:`registry` imports
those modules once, so declaring one is all it takes to have it run. The pattern lives in core so that
any app declares its jobs without importing another app; the runner is retention's (retention/runner.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.utils.module_loading import autodiscover_modules

from core.audit import Actor


class JobOutcome(StrEnum):
    """How a run ended (the ``outcome`` label of ``mutt_job_runs_total``)."""

    DONE = "done"  # it changed something
    IDLE = "idle"  # there was nothing to do
    FAILED = "failed"  # it could not do all of its work (it said so, or it raised)
    LOCKED = "locked"  # not run: another runner was running it


@dataclass(frozen=True)
class JobResult:
    outcome: JobOutcome
    summary: str  # what it did, for the log line of the run
    details: dict[str, Any] = field(default_factory=dict)  # logged with it (field ``details``)


@dataclass(frozen=True)
class Job:
    name: str
    interval: float  # seconds from the start of one run to the next
    run: Callable[[Actor], JobResult]
    help: str
    # The most a run may take: the cluster kills a run that takes longer (a failure, retried), and the
    # job's lock expires a little after it, so a process that died mid-run does not keep the job from
    # running elsewhere. Must stay below MUTT_SCHEDULER_RETRY_SECONDS minus 10 s (ADR-014).
    timeout: float = 600.0


_jobs: dict[str, Job] = {}


class UnknownJob(KeyError):
    pass


def job(name: str, *, every: float, help: str, timeout: float = 600.0) -> Callable[[Callable[[Actor], JobResult]], Job]:
    """Declare ``run`` as the job ``name``, due every ``every`` seconds."""

    def register(run: Callable[[Actor], JobResult]) -> Job:
        if name in _jobs:
            raise ValueError(f"a job named {name!r} is declared twice")
        declared = Job(name, every, run, help, timeout)
        _jobs[name] = declared
        return declared

    return register


def registry() -> dict[str, Job]:
    """Every declared job by name, the ``jobs`` modules of the installed apps imported first."""
    _discover()
    return dict(_jobs)


@functools.cache
def _discover() -> None:
    # Once per process; two threads at once import each module once all the same (the import lock).
    autodiscover_modules("jobs")


def get_job(name: str) -> Job:
    try:
        return registry()[name]
    except KeyError:
        raise UnknownJob(name) from None
