"""Retention's jobs (the pattern: :mod:`core.jobs`; the runner: :mod:`retention.runner`)."""

from __future__ import annotations

from core.audit import Actor
from core.jobs import JobOutcome, JobResult, job
from retention.partition_moves import move_default_rows
from retention.partitions import ensure_partitions


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
    if made:
        moved = f" ({moves.rows} rows moved from the default partition)" if moves.rows else ""
        return JobResult(JobOutcome.DONE, f"created {', '.join(made)}{moved}", details)
    return JobResult(JobOutcome.IDLE, "every partition exists", details)
