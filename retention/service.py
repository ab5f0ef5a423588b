"""Running the retention policies: one :class:`~retention.models.RetentionRun` per policy run.

:func:`run_retention` is the one way retention deletes anything, whoever asks (the daily jobs, an
operator's ``manage.py retention run``): it records who ran which policy, why, in which request, reads
the legal hold per run (``retention_legal_hold``, a runtime setting whose every change the config center
audits) and hands it to the policy, and ends each run with an outcome. A policy that raises ends its own
run FAILED with the error; the policies after it still run. A policy another run is running (the daily
job and an operator's ``retention run``, say) is not run again: its record is idle with
``details["busy"]`` saying so, which counts as no failure. A dry run records the policy's plan and
touches nothing. :func:`plan` asks every policy what it would do now, touching nothing either.

Policies are named by dotted path (:data:`POLICIES`) and imported when used, so an app that has not
shipped one yet fails that policy's run with an error naming the module, not the whole service.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any, cast

from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from configcenter.registry import REGISTRY
from configcenter.runtime import get_setting
from core import outage
from core.audit import Actor, clip_reason
from core.context import get_request_id, request_id_scope
from retention.models import RetentionRun, RunOutcome
from retention.policies import PlanItem, Policy, Progress

logger = logging.getLogger("mutt.retention")

# In the order a full run takes them: the event log first (archive, verify, drop), then the archives
# that expired, then the stores that are only deleted from.
POLICIES: dict[str, str] = {
    "events": "retention.archive.policy.EventsPolicy",
    "archives": "retention.archive.policy.ArchivesPolicy",
    "dlq": "retention.stores.DlqPolicy",
    "history": "retention.stores.HistoryPolicy",
}


class UnknownPolicy(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown retention policy {name!r}; choose one of {', '.join(POLICIES)}")
        self.name = name


class PolicyUnavailable(RuntimeError):
    """A registered policy whose module cannot be imported (not installed in this build)."""


class NoProgress:
    """Progress reported nowhere (jobs; the command shows a bar on a terminal)."""

    def update(self, done: int, total: int | None, label: str) -> None:
        pass


def policy_names(only: str | Iterable[str] | None = None) -> list[str]:
    """The policies to take, in :data:`POLICIES` order; UnknownPolicy names a name that is not one."""
    if only is None:
        return list(POLICIES)
    wanted = [only] if isinstance(only, str) else list(only)
    for name in wanted:
        if name not in POLICIES:
            raise UnknownPolicy(name)
    return [name for name in POLICIES if name in wanted]


def load_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise UnknownPolicy(name)
    path = POLICIES[name]
    try:
        policy_class = import_string(path)
    except ImportError as exc:
        raise PolicyUnavailable(f"policy {name!r} is not available: {path} cannot be imported ({exc})") from exc
    return cast(Policy, policy_class())


def plan(now: datetime | None = None, *, only: str | Iterable[str] | None = None) -> dict[str, list[PlanItem]]:
    """What each policy would do at ``now``; raises the first policy's error (see :func:`plan_each`)."""
    planned = {}
    for name, items in plan_each(now, only=only).items():
        if isinstance(items, Exception):
            raise items
        planned[name] = items
    return planned


def plan_each(
    now: datetime | None = None, *, only: str | Iterable[str] | None = None
) -> dict[str, list[PlanItem] | Exception]:
    """Each policy's plan, or the error that kept it from planning (so one broken store hides no other)."""
    now = now or timezone.now()
    planned: dict[str, list[PlanItem] | Exception] = {}
    for name in policy_names(only):
        try:
            planned[name] = load_policy(name).plan(now)
        except Exception as exc:
            _log_failure(name, exc, "planning")
            planned[name] = exc
    return planned


def plan_item_json(item: PlanItem) -> dict[str, Any]:
    data = asdict(item)
    for field in ("start", "end"):
        data[field] = data[field].isoformat() if data[field] is not None else None
    return data


def run_retention(
    actor: Actor,
    reason: str,
    *,
    only: str | Iterable[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> list[RetentionRun]:
    """Run each policy (or those in ``only``) once; returns their run records, in order."""
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be an Actor, not {type(actor).__name__}")
    reason = clip_reason(reason)
    if not reason:
        raise ValueError("reason: say why retention runs (it is recorded on every run)")
    names = policy_names(only)
    progress = progress or NoProgress()
    runs: list[RetentionRun] = []
    # One request id for the whole call: its runs and their log lines are found together.
    with request_id_scope(get_request_id() or None) as request_id:
        for name in names:
            # A client's X-Request-ID may be longer than the column; ours are 32 characters.
            fields = {"policy": name, "actor": actor.label, "reason": reason, "request_id": request_id[:64]}
            runs.append(_run_one(fields, dry_run, now or timezone.now(), progress))
    return runs


def _run_one(fields: dict[str, str], dry_run: bool, now: datetime, progress: Progress) -> RetentionRun:
    """One policy's run: its record is made once the policy's lock is held, so a record RUNNING is one
    whose process holds (or, killed, held) that lock. A policy another run holds is not run: its record
    says so (idle, ``details["busy"]``) and it is no failure, only two asks at once (the daily job and an
    operator's run, say); the run in progress does the work."""
    policy = fields["policy"]
    with _policy_lock(policy) as held:
        if not held:
            note = f"another run of {policy} is in progress"
            run = RetentionRun.objects.create(
                **fields, dry_run=dry_run, outcome=RunOutcome.IDLE, finished_at=timezone.now(), details={"busy": note}
            )
            logger.info("retention %s not run: %s", policy, note, extra={"policy": policy, "run_id": run.pk})
            return run
        run = RetentionRun.objects.create(**fields, dry_run=dry_run)
        _close_interrupted(run)
        _apply(run, now, progress)
    logger.info(
        "retention %s %s: %d rows archived, %d deleted",
        run.policy, run.outcome, run.rows_archived, run.rows_deleted,
        extra={"policy": run.policy, "outcome": str(run.outcome), "dry_run": run.dry_run, "run_id": run.pk},
    )  # fmt: skip
    return run


def _apply(run: RetentionRun, now: datetime, progress: Progress) -> None:
    """Run the policy (or plan it, for a dry run) under its lock; a policy that raises ends the run FAILED."""
    try:
        policy = load_policy(run.policy)
        hold = bool(get_setting("retention_legal_hold"))  # per run: a hold set a moment ago applies
        run.details["legal_hold"] = hold
        if run.dry_run:
            items = policy.plan(now)
            run.details["plan"] = [plan_item_json(item) for item in items]
            run.outcome = RunOutcome.DONE if items else RunOutcome.IDLE
        else:
            # What the hold keeps is what the policy would have deleted: its plan's deleting items.
            held = [plan_item_json(i) for i in policy.plan(now) if i.deletes] if hold else []
            policy.apply(run, now, hold=hold, progress=progress)
            if held:
                run.details["held"] = held
            run.outcome = _outcome(run, held)
    except Exception as exc:
        _log_failure(run.policy, exc, "running")
        run.outcome = RunOutcome.FAILED
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        run.finished_at = timezone.now()
        run.save()


def _close_interrupted(run: RetentionRun) -> None:
    """Mark FAILED the runs of this policy a killed process left running. It is called holding the
    policy's lock, and a record is only made by a process holding it: every other RUNNING record of the
    policy is then a process's that died (its lock went with its connection), whatever its id. Their
    counts stay as they were saved, batch by batch, before the process died."""
    interrupted = RetentionRun.objects.filter(policy=run.policy, outcome=RunOutcome.RUNNING).exclude(pk=run.pk)
    closed = interrupted.update(
        outcome=RunOutcome.FAILED,
        finished_at=timezone.now(),
        error=f"interrupted: the process running it ended before it finished (found by run #{run.pk})",
    )
    if closed:
        logger.warning("retention %s: %d earlier run(s) had been interrupted; marked failed", run.policy, closed)


def _outcome(run: RetentionRun, held: list[dict[str, Any]]) -> str:
    """A policy may set the outcome itself; otherwise HELD when the hold kept something, DONE when the
    run changed something (counts, or ``details["changed"]``), IDLE when there was nothing to do."""
    if run.outcome != RunOutcome.RUNNING:
        return str(run.outcome)
    if held:
        return RunOutcome.HELD
    counts = (run.rows_archived, run.rows_deleted, run.bytes_archived, run.bytes_deleted)
    return RunOutcome.DONE if any(counts) or run.details.get("changed") else RunOutcome.IDLE


def _log_failure(policy: str, exc: Exception, doing: str) -> None:
    reporter = outage.reporter_for(exc)
    if reporter is not None:
        reporter.failed(exc, doing=f"retention {policy} failed while {doing}")
    elif isinstance(exc, PolicyUnavailable):
        logger.error("retention %s: %s", policy, exc)
    else:
        logger.exception("retention %s failed while %s", policy, doing)


@contextlib.contextmanager
def _policy_lock(policy: str) -> Iterator[bool]:
    """A PostgreSQL advisory lock per policy for the run: two runs of one policy never overlap (a scheduled
    run and an operator's), and a killed run's lock goes with its connection. False: another run holds it."""
    lock_id = zlib.crc32(f"mutt.retention.{policy}".encode())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
        if not cursor.fetchone()[0]:
            yield False
            return
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])


# --- state, for the command, the admin and the metrics -------------------------------------------


def last_runs(*, dry_run: bool | None = False) -> dict[str, RetentionRun | None]:
    """The latest run of each policy (real runs unless ``dry_run`` says otherwise); one indexed query each."""
    runs = RetentionRun.objects.all()
    if dry_run is not None:
        runs = runs.filter(dry_run=dry_run)
    return {name: runs.filter(policy=name).order_by("-started_at", "-id").first() for name in POLICIES}


def retention_settings() -> list[dict[str, str]]:
    """Every retention setting with the value in force now: what each policy keeps, and for how long."""
    return [
        {"setting": d.key, "value": d.to_text(get_setting(d.key)), "unit": d.unit, "description": d.description}
        for d in sorted(REGISTRY.values(), key=lambda d: d.key)
        if d.component == "retention"
    ]


def legal_hold() -> dict[str, Any]:
    """Whether the legal hold is on, and its last change (who, when, why) from the config center's history."""
    from configcenter.models import DynamicSetting

    change = DynamicSetting.history.filter(key="retention_legal_hold").order_by("-history_date", "-history_id").first()
    row = DynamicSetting.objects.filter(key="retention_legal_hold").first()
    return {
        "on": bool(get_setting("retention_legal_hold")),
        "changed_at": change.history_date if change else None,
        "changed_by": change.history_actor if change else "",
        "reason": change.history_change_reason or "" if change else "",
        "setting_id": row.pk if row else None,
    }


def schedules() -> list[dict[str, Any]]:
    """django-q's schedules (name, task, next run), soonest first; empty when django-q is not installed."""
    from django.apps import apps

    if not apps.is_installed("django_q"):
        return []
    from django_q.models import Schedule

    return [
        {"name": s.name or s.func, "func": s.func, "next_run": s.next_run, "type": s.get_schedule_type_display()}
        for s in Schedule.objects.order_by("next_run")
    ]
