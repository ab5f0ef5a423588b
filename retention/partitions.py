"""Monthly partitions of the event audit log, created ahead of the months that need them.

The ``audit_partitions`` job (:mod:`retention.jobs`) runs :func:`ensure_partitions` every hour; the
first migration of the audit log runs it once, so a new database has this month and the next.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

from django.db import connection, transaction
from django.db.utils import DatabaseError

from core import outage

logger = logging.getLogger("mutt.partitions")

TABLE = "rules_eventauditlog"


# pg_get_expr of a range partition's bound: FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    """One partition of the event audit log as PostgreSQL's catalogue describes it."""

    name: str
    start: datetime | None  # None for the default partition
    end: datetime | None
    is_default: bool
    row_estimate: int | None  # the planner's estimate (None until the table was first analysed)
    bytes: int  # table, indexes and TOAST


def list_partitions() -> list[Partition]:
    """Every partition of the event audit log, the default one first, then by range."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples, pg_total_relation_size(c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        rows = cursor.fetchall()
    partitions = []
    for name, bound, reltuples, size in rows:
        found = _BOUND.search(bound or "")
        start, end = (datetime.fromisoformat(found[1]), datetime.fromisoformat(found[2])) if found else (None, None)
        estimate = int(reltuples) if reltuples is not None and reltuples >= 0 else None
        partitions.append(Partition(name, start, end, found is None, estimate, int(size)))
    return sorted(partitions, key=lambda p: (not p.is_default, p.start or datetime.min.replace(tzinfo=UTC)))


class PartitionCheck(NamedTuple):
    created: list[str]
    blocked: list[str]  # months PostgreSQL refused to create (logged): their rows sit in the default partition


def month_start(day: date, offset: int = 0) -> date:
    index = day.year * 12 + (day.month - 1) + offset
    return date(index // 12, index % 12 + 1, 1)


def partition_name(start: date) -> str:
    return f"{TABLE}_y{start.year:04d}m{start.month:02d}"


def ensure_partitions(months_ahead: int = 2, today: date | None = None) -> PartitionCheck:
    """Create the partitions from this month to ``months_ahead`` months on (idempotent).

    A month whose rows already landed in the default partition cannot get its own partition until
    those rows are moved (the retention manager's job); that is logged and skipped, never fatal:
    the default partition keeps accepting events. An unreachable database raises (the other months
    would fail alike), for the caller to report as the outage it is.
    """
    today = today or datetime.now(UTC).date()
    check = PartitionCheck([], [])
    for offset in range(months_ahead + 1):
        start = month_start(today, offset)
        end = month_start(today, offset + 1)
        name = partition_name(start)
        try:
            # A savepoint per month: in a transaction (the migration's), one refused month must not abort the rest.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass(%s)", [name])
                if cursor.fetchone()[0] is not None:
                    continue
                cursor.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{TABLE}" '
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
            check.created.append(name)
        except DatabaseError as exc:
            if outage.reporter_for(exc) is not None:
                raise
            logger.warning("could not create partition %s: %s", name, exc)
            check.blocked.append(name)
    return check
