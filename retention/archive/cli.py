"""``manage.py retention restore`` and ``retention drop-restored`` (the command delegates to these two).

``options`` is the command's options: ``from`` and ``to`` (months as YYYY-MM), ``reason`` (required:
restoring audit data for an investigation is itself audited) and ``actor`` (a :class:`core.audit.Actor`
or its label; default ``cli:<login>``). Each call is recorded as a :class:`RetentionRun` (policy
``restore``) with what was loaded or dropped, its actor, reason and request id.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from django.utils import timezone

from core.audit import Actor
from core.context import get_request_id
from retention.archive import restore as restoring
from retention.archive.store import get_store
from retention.models import RetentionRun, RunOutcome

logger = logging.getLogger("mutt.retention.archive")


class Writer(Protocol):
    def write(self, text: str) -> Any: ...


def _actor(options: dict[str, Any]) -> str:
    actor = options.get("actor")
    if actor is None:
        return Actor.cli().label
    return actor.label if isinstance(actor, Actor) else str(actor)


def _reason(options: dict[str, Any]) -> str:
    reason = (options.get("reason") or "").strip()
    if not reason:
        raise ValueError("reason: say why the archive is restored or dropped (it is recorded)")
    return reason


def _start(policy_detail: str, options: dict[str, Any]) -> RetentionRun:
    return RetentionRun.objects.create(
        policy="restore",
        actor=_actor(options),
        reason=_reason(options),
        request_id=get_request_id(),
        details={"action": policy_detail},
    )


def _finish(run: RetentionRun, outcome: str, error: str = "") -> None:
    run.outcome, run.error, run.finished_at = outcome, error, timezone.now()
    run.save()


def restore(options: dict[str, Any], stdout: Writer) -> RetentionRun:
    """Load the archives of months ``from``..``to`` (inclusive) into the restored table, each checked."""
    start = restoring.parse_month(options.get("from"), "from")
    end = restoring.next_month(restoring.parse_month(options.get("to") or options.get("from"), "to"))
    if end <= start:
        raise ValueError(f"to: {options.get('to')} is before from: {options.get('from')}")
    run = _start("restore", options)
    run.details.update({"from": start.isoformat(), "to": end.isoformat(), "table": restoring.RESTORED})
    archives = restoring.archives_between(start, end)
    if not archives:
        stdout.write(f"no archive holds events between {start:%Y-%m} and {end:%Y-%m} (exclusive)\n")
        _finish(run, RunOutcome.IDLE)
        return run
    store = get_store()
    loaded = run.details.setdefault("loaded", [])
    try:
        restoring.ensure_table()
        for archive in archives:
            result = restoring.load(store, archive)
            verb = "already restored" if result.skipped else f"restored {result.rows} rows"
            stdout.write(f"{archive.partition} (archive #{archive.generation}): {verb}, checksum matches\n")
            loaded.append(
                {
                    "partition": archive.partition,
                    "generation": archive.generation,
                    "rows": result.rows,
                    "skipped": result.skipped,
                }
            )
            run.rows_archived += 0 if result.skipped else result.rows
    except Exception as exc:
        logger.error("restore of %s..%s failed: %s", start.date(), end.date(), exc)
        _finish(run, RunOutcome.FAILED, str(exc))
        raise
    _finish(run, RunOutcome.DONE)
    stdout.write(f"the rows are in the table {restoring.RESTORED} (column restored_from: the archive)\n")
    return run


def drop_restored(options: dict[str, Any], stdout: Writer) -> RetentionRun:
    """Drop the restored table with everything restored into it (the archives themselves are untouched)."""
    run = _start("drop_restored", options)
    held = restoring.drop_table()
    run.details.update({"table": restoring.RESTORED, "dropped": held})
    run.rows_deleted = sum(entry["rows"] for entry in held)
    _finish(run, RunOutcome.DONE if held else RunOutcome.IDLE)
    if held:
        stdout.write(f"dropped {restoring.RESTORED} ({run.rows_deleted} rows from {len(held)} archives)\n")
    else:
        stdout.write(f"nothing to drop: {restoring.RESTORED} does not exist\n")
    return run
