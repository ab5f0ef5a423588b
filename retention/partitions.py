"""Partitions of the event audit log: listed, planned and created ahead of the time that needs them.

The ``audit_partitions`` job (:mod:`retention.jobs`) runs :func:`ensure_partitions` every hour; the
first migration of the audit log runs it once, so a new database has this month and the next. Rows
that reached the default partition are moved into partitions of their own by
:mod:`retention.partition_moves`.

Ranges follow the ``partition_interval`` setting (``month`` or ``day``), read per use; a change
applies to partitions not yet made. A range never overlaps an existing partition: each new range is
the interval that holds its first moment, cut to the gap between the partitions around it (after a
switch from months to days, day partitions start after the last month made; after days to months, the
month's partition starts after the last day made). Bounds are UTC midnights.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.db.utils import DatabaseError

from configcenter.runtime import get_setting
from core import outage

logger = logging.getLogger("mutt.partitions")

TABLE = "rules_eventauditlog"
DEFAULT = f"{TABLE}_default"
INTERVALS = ("month", "day")
LOCK_TIMEOUT_MS = 200  # the most an insert into the default partition waits for a partition being made
CREATE_ATTEMPTS = 3
LOCK_NOT_AVAILABLE = "55P03"
# A table being filled from the default partition before it is attached (retention.partition_moves)
# carries this comment, followed by its range; its range counts as taken.
PENDING_MARK = "mutt: partition being filled from the default partition:"

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


class Span(NamedTuple):
    """A partition's range, [start, end) in UTC days."""

    start: date
    end: date

    def holds(self, day: date) -> bool:
        return self.start <= day < self.end

    @property
    def bounds(self) -> tuple[str, str]:
        """The range as the timestamps PostgreSQL's bound and constraint take (UTC midnights)."""
        return f"{self.start.isoformat()} 00:00:00+00", f"{self.end.isoformat()} 00:00:00+00"


class PartitionCheck(NamedTuple):
    created: list[str]
    blocked: list[str]  # ranges PostgreSQL refused to create (logged): their rows sit in the default partition
    busy: bool = False  # a move from the default partition was running: nothing created, the next run will


# Partitions are made by one session at a time, ahead (ensure_partitions) or from the default partition's
# rows (retention.partition_moves): two could otherwise plan overlapping ranges. A session lock, released
# if its process dies.
ADVISORY_KEY = 0x4D55_5454_0015  # "MUTT" 15


@contextlib.contextmanager
def partition_lock() -> Iterator[bool]:
    """Whether this session has the partition makers' lock (not waited for), held for the block."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_KEY])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_KEY])


def month_start(day: date, offset: int = 0) -> date:
    index = day.year * 12 + (day.month - 1) + offset
    return date(index // 12, index % 12 + 1, 1)


def partition_name(start: date, end: date | None = None) -> str:
    """``rules_eventauditlog_y2026m12`` for a whole month (``end`` omitted or the next month's first day),
    ``rules_eventauditlog_y2026m12d03`` for any other range (a day, or a month cut short by a switch of
    interval). Ranges never overlap, so their first days, and so their names, are unique."""
    if start.day == 1 and (end is None or end == month_start(start, 1)):
        return f"{TABLE}_y{start.year:04d}m{start.month:02d}"
    return f"{TABLE}_y{start.year:04d}m{start.month:02d}d{start.day:02d}"


def checked_interval(value: str | None) -> str:
    """``value``, or the ``partition_interval`` setting read now, checked (the registry's enum refuses
    anything else; neither a hand-edited row nor a caller's typo may make odd ranges)."""
    value = str(get_setting("partition_interval")) if value is None else value
    if value not in INTERVALS:
        raise ValueError(f"partition_interval: {value!r} is not one of {', '.join(INTERVALS)}")
    return value


def natural_span(day: date, interval: str) -> Span:
    """The whole interval (month or day) that holds ``day``."""
    if interval == "day":
        return Span(day, day + timedelta(days=1))
    return Span(month_start(day), month_start(day, 1))


def span_for(day: date, interval: str, taken: Iterable[Span]) -> Span:
    """The range a new partition holding ``day`` gets: its interval, cut to the gap between the taken
    ranges around ``day`` (which must not hold it)."""
    span = natural_span(day, interval)
    start, end = span
    for other in taken:
        if other.holds(day):
            raise ValueError(f"{day} is already in the partition range {other.start}..{other.end}")
        if start < other.end <= day:
            start = other.end
        if day < other.start < end:
            end = other.start
    return Span(start, end)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def taken_spans() -> list[Span]:
    """The ranges of the attached partitions and of the tables being filled to become partitions."""
    spans = [
        Span(_utc_day(p.start), _utc_day(p.end)) for p in list_partitions() if p.start is not None and p.end is not None
    ]
    return spans + [span for _, span in pending_tables()]


def pending_tables() -> list[tuple[str, Span]]:
    """Tables a move from the default partition made and has not attached yet (a run cut short), with their range."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, d.description FROM pg_class c JOIN pg_description d "
            "ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0 "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace AND d.description LIKE %s "
            "ORDER BY c.relname",
            [PENDING_MARK + "%"],
        )
        rows = cursor.fetchall()
    found = []
    for name, description in rows:
        start, end = description[len(PENDING_MARK) :].split()
        found.append((name, Span(date.fromisoformat(start), date.fromisoformat(end))))
    return found


def planned_spans(today: date, months_ahead: int, interval: str, taken: list[Span]) -> list[Span]:
    """The ranges missing from this month's (or, by day, today's) start to the end of the month
    ``months_ahead`` on: the same horizon whatever the interval."""
    horizon = month_start(today, months_ahead + 1)
    day = today if interval == "day" else month_start(today)
    taken = list(taken)
    missing = []
    while day < horizon:
        holder = next((span for span in taken if span.holds(day)), None)
        if holder is not None:
            day = holder.end
            continue
        span = span_for(day, interval, taken)
        missing.append(span)
        taken.append(span)
        day = span.end
    return missing


def ensure_partitions(
    months_ahead: int | None = None, today: date | None = None, interval: str | None = None
) -> PartitionCheck:
    """Create the partitions from now to ``months_ahead`` months on (idempotent).

    ``months_ahead`` and ``interval`` default to the ``partition_months_ahead`` and
    ``partition_interval`` settings, read at each call. A range whose rows already landed in the
    default partition cannot get its partition this way (``retention.partition_moves`` makes it from
    those rows); that is logged and reported, never fatal: the default partition keeps accepting
    events. An unreachable database raises (the other ranges would fail alike), for the caller to
    report as the outage it is.
    """
    today = today or datetime.now(UTC).date()
    months_ahead = int(get_setting("partition_months_ahead")) if months_ahead is None else months_ahead
    interval = checked_interval(interval)
    with partition_lock() as held:
        if not held:
            logger.info("partitions not checked: a move from the default partition is running")
            return PartitionCheck([], [], busy=True)
        return _ensure(today, months_ahead, interval)


def _ensure(today: date, months_ahead: int, interval: str) -> PartitionCheck:
    check = PartitionCheck([], [])
    for span in planned_spans(today, months_ahead, interval, taken_spans()):
        name = partition_name(*span)
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                _create(name, span)
                check.created.append(name)
                break
            except DatabaseError as exc:
                locked = getattr(exc.__cause__, "pgcode", None) == LOCK_NOT_AVAILABLE
                if locked and attempt < CREATE_ATTEMPTS:
                    time.sleep(0.05 * attempt)  # the inserts that queued behind the lock go first
                    continue
                if not locked and outage.reporter_for(exc) is not None:  # a lock timeout is an OperationalError too
                    raise
                logger.warning("could not create partition %s: %s", name, exc)
                check.blocked.append(name)
                break
    return check


def _create(name: str, span: Span) -> None:
    start, end = span.bounds
    # A savepoint per range: in a transaction (the migration's), one refused range must not abort the rest,
    # and a refused ATTACH takes its standalone table with it.
    with transaction.atomic(), connection.cursor() as cursor:
        # Not CREATE ... PARTITION OF: that locks the log itself ACCESS EXCLUSIVE (PostgreSQL 15: one open
        # insert into any partition made it wait, and every insert and read of the log queued behind it).
        # A standalone table like the log (as retention.partition_moves makes them: the log's identity
        # numbers rows, so none here), with a CHECK of its range so ATTACH need not scan it; ATTACH takes
        # SHARE UPDATE EXCLUSIVE on the log (inserts and reads go on) and ACCESS EXCLUSIVE on the default
        # partition, to scan it for rows of the range: an alerter mid-COPY into it must not make this wait
        # long, nor its inserts queue behind this for long. The caller's lock_timeout is put back after
        # (the migration's transaction goes on).
        cursor.execute("SHOW lock_timeout")
        previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{LOCK_TIMEOUT_MS}ms"])
        cursor.execute(f'CREATE TABLE "{name}" (LIKE "{TABLE}" INCLUDING ALL EXCLUDING IDENTITY)')
        cursor.execute(
            f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_range" CHECK (event_time >= %s AND event_time < %s)',
            [start, end],
        )
        cursor.execute(f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)', [start, end])
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
