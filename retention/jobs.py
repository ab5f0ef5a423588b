"""Retention's jobs (the pattern: :mod:`core.jobs`; the runner: :mod:`retention.runner`)."""

from __future__ import annotations

from core.audit import Actor
from core.jobs import JobOutcome, JobResult, job
from retention.partitions import ensure_partitions
from retention.service import run_retention


@job(
    "audit_partitions",
    every=3600.0,  # three catalogue lookups an hour cost nothing, and a failed run is retried within the hour
    help="Create the event audit log's monthly partitions: this month and the next two.",
)
def audit_partitions(actor: Actor) -> JobResult:
    check = ensure_partitions()
    details = {"created": check.created, "blocked": check.blocked}
    if check.blocked:
        return JobResult(
            JobOutcome.FAILED,
            f"could not create {', '.join(check.blocked)} (rows of that month are in the default partition?)",
            details,
        )
    if check.created:
        return JobResult(JobOutcome.DONE, f"created {', '.join(check.created)}", details)
    return JobResult(JobOutcome.IDLE, "every partition exists", details)


# --- retention policies (retention.service): one job per policy, daily ----------------------------
# One job each rather than one for all: each has its own schedule, lock, retries and failure count, so a
# failing archive store delays neither the DLQ nor the history clean-up. Daily is the granularity of every
# retention setting (days); a missed day only means a day's more data until the next run.

DAY = 86_400.0


def _retention_job(policy: str, actor: Actor) -> JobResult:
    """Run one policy as ``actor``: the scheduler's (system:scheduler), or an operator's through run_job."""
    (run,) = run_retention(actor, f"job retention_{policy}", only=policy)
    details = {"run_id": run.pk, "outcome": run.outcome, "rows_archived": run.rows_archived,
               "rows_deleted": run.rows_deleted}  # fmt: skip
    if run.outcome == "failed":
        return JobResult(JobOutcome.FAILED, f"{policy} failed: {run.error}", details)
    summary = f"{policy} {run.outcome}: {run.rows_archived} rows archived, {run.rows_deleted} deleted"
    changed = run.outcome == "done" or run.rows_archived or run.rows_deleted
    return JobResult(JobOutcome.DONE if changed else JobOutcome.IDLE, summary, details)


@job("retention_events", every=DAY, timeout=3000.0,
     help="Archive, verify and drop the event log's partitions older than event_retention_days.")  # fmt: skip
def retention_events(actor: Actor) -> JobResult:
    return _retention_job("events", actor)


@job("retention_archives", every=DAY, help="Delete event-log archives older than archive_retention_days.")
def retention_archives(actor: Actor) -> JobResult:
    return _retention_job("archives", actor)


@job("retention_dlq", every=DAY, help="Remove DLQ and dead-queue entries older than dlq_retention_days.")
def retention_dlq(actor: Actor) -> JobResult:
    return _retention_job("dlq", actor)


@job("retention_history", every=DAY, help="Delete configuration history older than config_audit_retention_days.")
def retention_history(actor: Actor) -> JobResult:
    return _retention_job("history", actor)
