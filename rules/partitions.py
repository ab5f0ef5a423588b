"""Monthly partitions of the event audit log."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from django.db import connection
from django.db.utils import DatabaseError

from core import outage

logger = logging.getLogger("mutt.partitions")

TABLE = "rules_eventauditlog"


def month_start(day: date, offset: int = 0) -> date:
    index = day.year * 12 + (day.month - 1) + offset
    return date(index // 12, index % 12 + 1, 1)


def partition_name(start: date) -> str:
    return f"{TABLE}_y{start.year:04d}m{start.month:02d}"


def ensure_partitions(months_ahead: int = 2, today: date | None = None) -> list[str]:
    """Create the partitions from this month to ``months_ahead`` months on (idempotent).

    A month whose rows already landed in the default partition cannot get its own partition until
    those rows are moved (the retention manager's job); that is logged and skipped, never fatal:
    the default partition keeps accepting events.
    """
    today = today or datetime.now(UTC).date()
    created = []
    for offset in range(months_ahead + 1):
        start = month_start(today, offset)
        end = month_start(today, offset + 1)
        name = partition_name(start)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass(%s)", [name])
                if cursor.fetchone()[0] is not None:
                    continue
                cursor.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{TABLE}" '
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
            created.append(name)
        except DatabaseError as exc:
            reporter = outage.reporter_for(exc)
            if reporter is not None:  # unreachable: the other months would fail alike; one line says it
                reporter.failed(exc, doing="audit partitions not checked")
                break
            logger.warning("could not create partition %s: %s", name, exc)
    return created
