"""The retention policies: one per store, each able to say what it would do and to do it.

A policy reads its settings from the config center on every use (never cached across runs). The
orchestrator (:mod:`retention.service`) creates the :class:`~retention.models.RetentionRun`, checks
the legal hold and calls the policies; a policy only fills in what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from retention.models import RetentionRun


@dataclass
class PlanItem:
    """One thing a policy would do now, for ``retention plan`` and the admin."""

    store: str  # events, default_partition, dlq:<stream>, dead_queue, history:<model>, archives
    action: str  # archive_and_drop, move, create, delete, expire
    target: str  # a partition name, a stream, a table, an archive
    rows: int | None = None
    bytes: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    deletes: bool = False  # True when the action removes data (suspended by the legal hold)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Progress(Protocol):
    """Where a policy reports progress (a bar on a terminal, nothing in a job)."""

    def update(self, done: int, total: int | None, label: str) -> None: ...


class Policy(Protocol):
    name: str  # the --only name: events, dlq, history, archives

    def plan(self, now: datetime) -> list[PlanItem]:
        """What this policy would do at ``now``; touches nothing."""
        ...

    def apply(self, run: RetentionRun, now: datetime, *, hold: bool, progress: Progress) -> None:
        """Do it, recording counts, files and ranges on ``run`` (saved by the caller).

        With ``hold`` (the legal hold) nothing is deleted; work that only adds (exports, moves,
        creating partitions) still happens. Raises on an error: the caller records it as failed.
        """
        ...
