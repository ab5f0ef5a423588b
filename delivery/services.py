"""State changes of the dead-letter queues; each takes an explicit actor and a reason and is audited.

The admin and the remediation worker (``Actor.system("remediation")``) call the same functions. The
effect is in Redis and the audit row in PostgreSQL, so they cannot share one transaction; the order is
chosen so that no change goes unrecorded: the transaction is opened first (which fails at once when the
database is down, before Redis is touched), then the Lua script changes Redis, then the audit row with
the real outcome is inserted and committed. Only a failure between the script and the commit could
leave a change without its row, and that case is logged with everything the row would have said.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from django.db import transaction
from prometheus_client import Counter

from core import contracts
from core.audit import Actor
from core.context import get_request_id
from core.redis import get_redis
from delivery import dlq
from delivery.models import DlqAction, DlqActionKind, DlqOutcome

logger = logging.getLogger("mutt.dlq")

REASON_MAX = 500

REPLAYED = Counter("mutt_dlq_replays_total", "DLQ entries replayed, by queue and initiator.", ["queue", "by"])
BURIED = Counter("mutt_dlq_dead_total", "DLQ entries moved to the dead queue (poison), by queue and initiator.",
                 ["queue", "by"])  # fmt: skip
PURGED = Counter("mutt_dlq_purged_total", "DLQ entries purged, by queue and initiator.", ["queue", "by"])


@dataclass
class ActionReport:
    """What an operation did (per entry id) and the audit rows written for it."""

    result: dlq.BatchResult
    actions: list[DlqAction] = field(default_factory=list)

    @property
    def replayed(self) -> list[str]:
        return self.result.ids(dlq.REPLAYED)

    @property
    def dead(self) -> list[str]:
        return self.result.ids(dlq.DEAD)

    @property
    def purged(self) -> list[str]:
        return self.result.ids(dlq.PURGED)

    @property
    def missing(self) -> list[str]:
        return self.result.ids(dlq.MISSING)

    @property
    def invalid(self) -> list[str]:
        return self.result.ids(dlq.INVALID)

    def summary(self) -> str:
        """``"2 replayed, 1 missing"``: for admin messages and logs."""
        parts = [f"{len(ids)} {status}" for status, ids in self.result.by_status().items()]
        return ", ".join(parts) or "nothing to do"


def replay_entries(
    *,
    actor: Actor,
    queue: str,
    entry_ids: list[str],
    reason: str,
    max_replays: int = 0,
    client: redis.Redis | None = None,
) -> ActionReport:
    """Replay entries to where they came from. With ``max_replays`` > 0 (the remediation worker), an entry
    whose event would be replayed more often than that is moved to the dead queue instead, and recorded as
    a separate ``dead`` action."""
    reason = _check(actor, queue, entry_ids, reason)
    report = _run(
        actor, queue, entry_ids=entry_ids, reason=reason, kind=DlqActionKind.REPLAY, success=dlq.REPLAYED,
        change=lambda c: dlq.replay(c, queue, entry_ids, max_replays=max_replays), client=client,
        poison_reason=f"replayed more than {max_replays} times: poison" if max_replays else "",
    )  # fmt: skip
    REPLAYED.labels(queue, _initiator(actor)).inc(len(report.replayed))
    BURIED.labels(queue, _initiator(actor)).inc(len(report.dead))
    return report


def purge_entries(
    *, actor: Actor, queue: str, entry_ids: list[str], reason: str, client: redis.Redis | None = None
) -> ActionReport:
    """Delete entries for good."""
    reason = _check(actor, queue, entry_ids, reason)
    report = _run(
        actor, queue, entry_ids=entry_ids, reason=reason, kind=DlqActionKind.PURGE, success=dlq.PURGED,
        change=lambda c: dlq.purge(c, queue, entry_ids), client=client,
    )  # fmt: skip
    PURGED.labels(queue, _initiator(actor)).inc(len(report.purged))
    return report


def bury_entries(
    *, actor: Actor, queue: str, entry_ids: list[str], reason: str, client: redis.Redis | None = None
) -> ActionReport:
    """Move entries of the alerter or Moogsoft DLQ to the dead queue (out of remediation's reach)."""
    reason = _check(actor, queue, entry_ids, reason)
    if queue == contracts.DEAD_QUEUE:
        raise ValueError("entries of the dead queue are already dead")
    report = _run(
        actor, queue, entry_ids=entry_ids, reason=reason, kind=DlqActionKind.DEAD, success=dlq.DEAD,
        change=lambda c: dlq.move_to_dead(c, queue, entry_ids), client=client,
    )  # fmt: skip
    BURIED.labels(queue, _initiator(actor)).inc(len(report.dead))
    return report


def _check(actor: Actor, queue: str, entry_ids: list[str], reason: str) -> str:
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be an Actor, not {type(actor).__name__}")
    dlq.check_queue(queue)
    if not entry_ids:
        raise ValueError("no entries selected")
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required")
    return reason[:REASON_MAX]


def _initiator(actor: Actor) -> str:
    return "system" if actor.label.startswith("system:") else "operator"


def _run(
    actor: Actor,
    queue: str,
    *,
    entry_ids: list[str],
    reason: str,
    kind: str,
    success: str,
    change: Callable[[redis.Redis], dlq.BatchResult],
    client: redis.Redis | None,
    poison_reason: str = "",
) -> ActionReport:
    client = client or get_redis()
    with transaction.atomic():
        result = change(client)
        report = ActionReport(result)
        try:
            report.actions.append(
                _record(actor, queue, kind=kind, entry_ids=entry_ids, reason=reason, result=result, success=success)
            )
            dead = result.ids(dlq.DEAD)
            if dead and kind != DlqActionKind.DEAD:
                # Poison diverted during a replay: its own row, so the dead queue's history is one filter away.
                report.actions.append(
                    _record(actor, queue, kind=DlqActionKind.DEAD, entry_ids=dead, reason=poison_reason or reason,
                            result=result, success=dlq.DEAD, only=dead)
                )  # fmt: skip
        except Exception:
            logger.exception(
                "DLQ %s done in Redis but its audit row could not be written",
                kind,
                extra={"actor": actor.label, "queue": queue, "dlq_reason": reason, "results": result.results},
            )
            raise
    log = logger.warning if result.ids(dlq.DEAD) else logger.info
    log(
        "DLQ %s on %s: %s",
        kind,
        queue,
        report.summary(),
        extra={"actor": actor.label, "queue": queue, "dlq_reason": reason},
    )
    return report


def _record(
    actor: Actor,
    queue: str,
    *,
    kind: str,
    entry_ids: list[str],
    reason: str,
    result: dlq.BatchResult,
    success: str,
    only: list[str] | None = None,
) -> DlqAction:
    asked = list(dict.fromkeys(entry_ids))
    grouped = result.by_status()
    if only is not None:
        grouped = {status: [i for i in ids if i in set(only)] for status, ids in grouped.items()}
        grouped = {status: ids for status, ids in grouped.items() if ids}
    count = len(grouped.get(success, []))
    outcome = DlqOutcome.NOTHING if count == 0 else DlqOutcome.DONE if count == len(asked) else DlqOutcome.PARTIAL
    details = {**grouped, "event_ids": {i: result.event_keys[i] for i in asked if i in result.event_keys}}
    return DlqAction.objects.create(
        actor=actor.label,
        user=actor.user if getattr(actor.user, "pk", None) is not None else None,
        reason=reason,
        request_id=get_request_id(),
        queue=queue,
        action=kind,
        entry_ids=asked,
        count=count,
        outcome=outcome,
        details=details,
    )
