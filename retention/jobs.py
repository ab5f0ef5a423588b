"""Retention's jobs (the pattern: :mod:`core.jobs`; the runner: :mod:`retention.runner`)."""

from __future__ import annotations

from core.audit import Actor
from core.jobs import JobOutcome, JobResult, job
from retention.partition_moves import move_default_rows
from retention.partitions import ensure_partitions
from retention.service import run_retention


@job(
    "audit_partitions",
    every=3600.0,  # three catalogue lookups an hour cost nothing, and a failed run is retried within the hour
    help="Keep the event audit log's partitions partition_months_ahead ahead (by partition_interval), and move "
    "rows of the default partition into partitions of their own.",
)
def audit_partitions(actor: Actor) -> JobResult:
    # Moves first: a range with rows in the default partition gets its partition from them, which
    # creating it empty would be refused for.
    moves = move_default_rows()
    check = ensure_partitions()
    details = {
        "created": check.created,
        "blocked": check.blocked,
        **moves.as_details(),
        "busy": moves.busy or check.busy,
    }
    made = moves.attached + [name for name in check.created if name not in moves.attached]
    if check.blocked or moves.pending:
        stuck = check.blocked + moves.pending
        return JobResult(
            JobOutcome.FAILED,
            f"could not create {', '.join(stuck)} (rows of that range in the default partition, or its locks "
            "not had in time; the next run goes on)",
            details,
        )
    # Rows of ranges already past the retention horizon are not given a partition again (ADR-015): said
    # on every run so that they are found (archiving them out of the default partition is still to come).
    expired = sum(moves.expired.values())
    left = f"; {expired} rows past the retention horizon stay in the default partition" if expired else ""
    if made:
        moved = f" ({moves.rows} rows moved from the default partition)" if moves.rows else ""
        return JobResult(JobOutcome.DONE, f"created {', '.join(made)}{moved}{left}", details)
    return JobResult(JobOutcome.IDLE, f"every partition exists{left}", details)


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
    if run.details.get("busy"):
        # An operator's run (or another worker's) of this policy is doing the work: nothing failed, and a
        # retry would only find it again.
        return JobResult(JobOutcome.IDLE, run.details["busy"], details)
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
