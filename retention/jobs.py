"""Retention's jobs (the pattern: :mod:`core.jobs`; the runner: :mod:`retention.runner`)."""

from __future__ import annotations

from core.audit import Actor
from core.jobs import JobOutcome, JobResult, job
from retention.partitions import ensure_partitions


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
