"""Retention of the stores other than the event log: the dead-letter streams and the configuration history.

Both remove audit evidence (a DLQ entry is the only trace of an event that failed; a history row is the
only trace of a change), so each run keeps, on its :class:`~retention.models.RetentionRun`, what went:
the count per reason (DLQ) or per model (history) and the time range removed. The run record is saved
after every batch, so a run killed half-way still says what it had removed.

- :class:`DlqPolicy`: entries of every DLQ stream (the alerter's, each destination's, the dead queue)
  that entered their stream more than ``dlq_retention_days`` ago. A stream entry's id is the time Redis
  added it, so "older than the cutoff" is an id range: each batch is one Lua call that reads at most
  :data:`DLQ_BATCH` entries below the cutoff id, counts their reasons and deletes exactly those. Writers
  only ever add ids above the last one (Redis's clock, now), so an entry newer than the cutoff is never
  in the range, however many are added meanwhile; an entry replayed by remediation between two batches
  is simply not there to count.
- :class:`HistoryPolicy`: history rows (django-simple-history) of every audited model older than
  ``config_audit_retention_days``, deleted in batches of :data:`HISTORY_BATCH`. The newest row of an
  object that still exists is kept whatever its age: it says who set the object as it is now and why,
  which is what an auditor asks of a rule that paged; it goes once the object changes again or is deleted.

Both read their setting on every use (``get_setting``), never at import, and the legal hold before every
batch: a hold turned on during a run stops it there (outcome ``held``, ``details["hold_started"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from simple_history.models import HistoricalChanges

from configcenter.runtime import get_setting
from core import contracts, streams
from core.redis import get_redis
from retention.models import RetentionRun, RunOutcome
from retention.policies import PlanItem, Progress

# Entries per Lua call: the call blocks Redis while it runs. Measured with entries as the alerter writes
# them (~770 bytes each in Redis), call and reply: 200 entries 1.7 ms, 500 6.6 ms, 1,000 9 ms. 200 keeps
# the alerter's calls from waiting behind it more than a couple of milliseconds; the run then removes
# about 15,000 entries/s, the run record's save after each batch being most of the time (a million
# entries in about a minute, once a day).
DLQ_BATCH = 200
# Rows per DELETE: each batch is its own short transaction (with the run record's counts), so history
# writes never wait long behind it. Measured: 100,000 expired rows in 6.9 s (14,000 rows/s, ~70 ms a batch).
HISTORY_BATCH = 1000

# KEYS[1]: a DLQ stream. ARGV: [1] the last id in range (inclusive), [2] most entries, [3] "delete" or
# "count", [4] where to start (inclusive "-" or exclusive "(<id>"). Returns {entries, first id, last id,
# {reason, count, ...}}. A dead-queue entry is counted under "<origin>/<reason>", the queue it came from.
_TRIM = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local counts, ids = {}, {}
for i, entry in ipairs(entries) do
  ids[i] = entry[1]
  local fields, reason, origin = entry[2], '', ''
  for j = 1, #fields, 2 do
    if fields[j] == 'reason' then reason = fields[j + 1] elseif fields[j] == 'origin' then origin = fields[j + 1] end
  end
  if reason == '' then reason = '(none)' end
  if origin ~= '' then reason = origin .. '/' .. reason end
  counts[reason] = (counts[reason] or 0) + 1
end
if ARGV[3] == 'delete' and #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
local flat = {}
for reason, n in pairs(counts) do flat[#flat + 1] = reason; flat[#flat + 1] = n end
return {#ids, ids[1] or '', ids[#ids] or '', flat}
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class Removed:
    """What went from one store (a stream, a table): how many, by reason, and the time range."""

    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, count: int, oldest: datetime | None, newest: datetime | None, reasons: dict[str, int]) -> None:
        self.count += count
        for reason, n in reasons.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + n
        if oldest is not None and (self.oldest is None or oldest < self.oldest):
            self.oldest = oldest
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest

    def as_json(self, *, reasons: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"removed": self.count, "oldest": _iso(self.oldest), "newest": _iso(self.newest)}
        if reasons:
            data["reasons"] = dict(sorted(self.by_reason.items()))
        return data


def _total(parts: dict[str, Removed], *, reasons: bool) -> dict[str, Any]:
    total = Removed()
    for part in parts.values():
        total.add(part.count, part.oldest, part.newest, part.by_reason)
    return total.as_json(reasons=reasons)


class HoldStarted(Exception):
    """The legal hold was turned on while a run was deleting."""


def stop_if_held() -> None:
    """Raise HoldStarted once the legal hold is on. Checked before every batch: a hold set during a long
    run stops it within one batch, not at its end (``get_setting`` is a dictionary lookup)."""
    if get_setting("retention_legal_hold"):
        raise HoldStarted


def held_midway(run: RetentionRun) -> None:
    run.outcome = RunOutcome.HELD
    run.details["hold_started"] = timezone.now().isoformat()


# --- DLQ streams ------------------------------------------------------------------------------------


def dlq_queues() -> list[str]:
    """Every dead-letter queue: the alerter's, each destination's (``dlq:moog`` is Moogsoft's), any other DLQ
    stream Redis holds (a destination since taken out of ``MUTT_DESTINATIONS`` leaves its DLQ behind, which
    nothing else would ever bound), and the dead queue."""
    configured = [contracts.ALERTER_QUEUE, *settings.MUTT_DESTINATIONS]
    left_behind = sorted(set(_dlq_streams_in_redis()) - {*configured, contracts.DEAD_QUEUE})
    return list(dict.fromkeys([*configured, *left_behind, contracts.DEAD_QUEUE]))


def _dlq_streams_in_redis() -> list[str]:
    """The queue names of the DLQ streams in Redis. SCAN walks the keyspace a thousand keys a call without
    blocking Redis: 1.7 s measured over a million keys (idempotency records), once per run and plan."""
    prefix = streams.dlq_stream("")
    found = get_redis().scan_iter(match=prefix + "*", count=1000, _type="stream")
    return [_decode(name)[len(prefix) :] for name in found]


def _entry_time(entry_id: bytes | str) -> datetime | None:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if not text:
        return None
    return datetime.fromtimestamp(int(text.split("-", 1)[0]) / 1000, UTC)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _share_of_memory(queue: str, entries: int) -> int | None:
    """The memory ``entries`` of the stream hold, estimated from Redis's sampled MEMORY USAGE of the whole."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.memory_usage(streams.dlq_stream(queue))
    pipe.xlen(streams.dlq_stream(queue))
    usage, length = pipe.execute()
    return int(usage) * entries // length if usage and length else None


class DlqPolicy:
    """DLQ and dead-queue entries older than ``dlq_retention_days``, removed in bounded batches."""

    name = "dlq"

    def cutoff(self, now: datetime) -> tuple[int, datetime]:
        days = int(get_setting("dlq_retention_days"))
        return days, now - timedelta(days=days)

    def _sweep(
        self, queue: str, cutoff: datetime, mode: str, on_batch: Callable[[Removed], None] | None = None
    ) -> Removed:
        client = get_redis()
        trim = client.register_script(_TRIM)
        stream = streams.dlq_stream(queue)
        # Ids are "<ms>-<seq>"; an end id of "<ms>" alone means every sequence number of that millisecond.
        # The cutoff is this host's clock, the ids Redis's: a skew of seconds is nothing against days.
        last_id = str(int(cutoff.timestamp() * 1000) - 1)
        removed, start = Removed(), "-"
        while True:
            if mode == "delete":
                stop_if_held()
            count, first, last, flat = trim(keys=[stream], args=[last_id, DLQ_BATCH, mode, start])
            reasons = {_decode(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
            removed.add(int(count), _entry_time(first), _entry_time(last), reasons)
            if on_batch is not None and count:
                on_batch(removed)
            if int(count) < DLQ_BATCH:
                return removed
            if mode == "count":  # nothing was deleted: carry on past the last entry read
                start = f"({_decode(last)}"

    def plan(self, now: datetime) -> list[PlanItem]:
        days, cutoff = self.cutoff(now)
        items = []
        for queue in dlq_queues():
            found = self._sweep(queue, cutoff, "count")
            if found.count:
                items.append(
                    PlanItem(
                        store="dead_queue" if queue == contracts.DEAD_QUEUE else f"dlq:{queue}",
                        action="delete",
                        target=streams.dlq_stream(queue),
                        rows=found.count,
                        bytes=_share_of_memory(queue, found.count),
                        start=found.oldest,
                        end=cutoff,
                        deletes=True,
                        note=f"entries older than {days} days (dlq_retention_days)",
                        details={"reasons": dict(sorted(found.by_reason.items()))},
                    )
                )
        return items

    def apply(self, run: RetentionRun, now: datetime, *, hold: bool, progress: Progress) -> None:
        days, cutoff = self.cutoff(now)
        run.details.update({"retention_days": days, "cutoff": cutoff.isoformat(), "streams": {}})
        if hold:
            return  # the orchestrator records what the hold kept
        parts: dict[str, Removed] = {}

        def record(name: str, removed: Removed) -> None:
            parts[name] = removed
            run.rows_deleted = sum(part.count for part in parts.values())
            run.details["streams"][name] = removed.as_json()
            run.details.update(_total(parts, reasons=True))

        for queue in dlq_queues():
            name = contracts.dlq_key(queue)

            def saved(removed: Removed, name: str = name) -> None:
                # After each batch: a run killed later still says what it removed (all but at most the
                # batch in hand, which Redis deleted before PostgreSQL could hear of it).
                record(name, removed)
                run.save(update_fields=["rows_deleted", "details"])
                progress.update(run.rows_deleted, None, f"dlq {name}")

            try:
                record(name, self._sweep(queue, cutoff, "delete", saved))
            except HoldStarted:
                held_midway(run)
                return


# --- configuration history ------------------------------------------------------------------------


def history_models() -> list[Any]:
    """The history model of every audited model (django-simple-history's generated ``Historical*``)."""
    found = [m for m in apps.get_models() if issubclass(m, HistoricalChanges)]
    return sorted(found, key=lambda model: model._meta.label)


def _pk(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.pk.column))


def _expired_rows_sql(model: Any) -> str:
    """The history ids older than ``%(cutoff)s``, oldest first, at most ``%(limit)s``: every such row except
    the newest row of an object that still exists (the record of its current state)."""
    # Every name below is a model's table or column, quoted; the values are parameters.
    qn = connection.ops.quote_name
    tracked = model.instance_type._meta
    table, pk, object_id = qn(model._meta.db_table), qn(model._meta.pk.column), qn(tracked.pk.column)
    return (
        f"SELECT h.{pk} FROM {table} h WHERE h.history_date < %(cutoff)s AND ("  # noqa: S608
        f"NOT EXISTS (SELECT 1 FROM {qn(tracked.db_table)} l WHERE l.{object_id} = h.{object_id}) "
        f"OR EXISTS (SELECT 1 FROM {table} n WHERE n.{object_id} = h.{object_id} "
        f"AND (n.history_date, n.{pk}) > (h.history_date, h.{pk}))) "
        f"ORDER BY h.history_date, h.{pk} LIMIT %(limit)s"
    )


class HistoryPolicy:
    """History rows of every audited model older than ``config_audit_retention_days``, deleted in batches."""

    name = "history"

    def cutoff(self, now: datetime) -> tuple[int, datetime]:
        days = int(get_setting("config_audit_retention_days"))
        return days, now - timedelta(days=days)

    def plan(self, now: datetime) -> list[PlanItem]:
        days, cutoff = self.cutoff(now)
        items = []
        for model in history_models():
            table = connection.ops.quote_name(model._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT count(*), min(history_date) FROM {table} WHERE {_pk(model)} IN "  # noqa: S608
                    f"({_expired_rows_sql(model)})",
                    {"cutoff": cutoff, "limit": None},
                )
                rows, oldest = cursor.fetchone()
                if not rows:
                    continue
                # Bytes estimated from the table's size and row count (history tables are small).
                sql = f"SELECT pg_table_size(%s), (SELECT count(*) FROM {table})"  # noqa: S608 (a quoted table name)
                cursor.execute(sql, [model._meta.db_table])
                size, total = cursor.fetchone()
            items.append(
                PlanItem(
                    store=f"history:{model.instance_type._meta.label_lower}",
                    action="delete",
                    target=model._meta.db_table,
                    rows=rows,
                    bytes=size * rows // max(total, 1),
                    start=oldest,
                    end=cutoff,
                    deletes=True,
                    note=f"history older than {days} days (config_audit_retention_days); each live object's "
                    "newest row is kept",
                )
            )
        return items

    def apply(self, run: RetentionRun, now: datetime, *, hold: bool, progress: Progress) -> None:
        days, cutoff = self.cutoff(now)
        run.details.update({"retention_days": days, "cutoff": cutoff.isoformat(), "models": {}})
        if hold:
            return
        parts: dict[str, Removed] = {}
        for model in history_models():
            label = model.instance_type._meta.label_lower
            table = connection.ops.quote_name(model._meta.db_table)
            removed = parts.setdefault(label, Removed())
            while True:
                if get_setting("retention_legal_hold"):
                    held_midway(run)
                    return
                # The batch and the run's counts commit together: a run killed at any point says exactly
                # what it removed.
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(
                        f"WITH gone AS (DELETE FROM {table} WHERE {_pk(model)} IN "  # noqa: S608
                        f"({_expired_rows_sql(model)}) RETURNING history_date) "
                        "SELECT count(*), min(history_date), max(history_date) FROM gone",
                        {"cutoff": cutoff, "limit": HISTORY_BATCH},
                    )
                    count, oldest, newest = cursor.fetchone()
                    if count:
                        removed.add(count, oldest, newest, {})
                        run.rows_deleted += count
                        run.details["models"][label] = removed.as_json(reasons=False)
                        run.details.update(_total(parts, reasons=False))
                        run.save(update_fields=["rows_deleted", "details"])
                if count:
                    progress.update(run.rows_deleted, None, f"history {label}")
                if count < HISTORY_BATCH:
                    break
        run.details.update(_total(parts, reasons=False))
