"""Data for the retention tests of the DLQ streams and the configuration history: entries and rows of a
given age, written the way the alerter, the forwarder, remediation and the services write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import connection

from core import contracts, streams
from tests.support.events import make_event

DAY_MS = 86_400_000


def dlq_fields(queue: str, reason: str, *, origin: str = "") -> dict[str, Any]:
    """The fields of a DLQ entry as its writer adds them (core.contracts' records)."""
    fields: dict[str, Any] = {
        "reason": reason,
        "error": "test",
        "attempts": 1,
        "source_id": b"1-0",
        "failed_at": datetime.now(UTC).isoformat(),
        "e": orjson.dumps(make_event()),
    }
    if queue == contracts.DEAD_QUEUE:
        fields.update({"origin": origin or contracts.ALERTER_QUEUE, "replays": 5, "moved_at": fields["failed_at"]})
    return fields


def fill_dlq(client: Any, queue: str, entries: list[tuple[float, str]], *, origin: str = "") -> list[str]:
    """Add ``(age in days, reason)`` entries to ``queue`` with ids of that age (Redis orders a stream by id,
    so they go in oldest first); returns their ids, oldest first."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    ids = []
    pipe = client.pipeline(transaction=False)
    for seq, (age, reason) in enumerate(sorted(entries, key=lambda entry: -entry[0])):
        entry_id = f"{now_ms - int(age * DAY_MS)}-{seq}"
        pipe.xadd(streams.dlq_stream(queue), dlq_fields(queue, reason, origin=origin), id=entry_id)
        ids.append(entry_id)
    pipe.execute()
    return ids


def fill_dlq_small(client: Any, queue: str, count: int, *, age_days: float, reason: str) -> None:
    """``count`` entries of ``age_days``, with a reason and an empty payload only (a big queue, cheaply)."""
    first_ms = int(datetime.now(UTC).timestamp() * 1000) - int(age_days * DAY_MS)
    for start in range(0, count, 10_000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(count, start + 10_000)):
            pipe.xadd(streams.dlq_stream(queue), {"reason": reason, "e": b"{}"}, id=f"{first_ms}-{n + 1}")
        pipe.execute()


def stream_ids(client: Any, queue: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(streams.dlq_stream(queue))]


def backdate_history(model: Any, days: float, **filters: Any) -> int:
    """Move the history rows of ``model`` matching ``filters`` ``days`` into the past (as if written then)."""
    history = model.history.model
    when = datetime.now(UTC) - timedelta(days=days)
    return int(history.objects.filter(**filters).update(history_date=when))


def history_count(model: Any, **filters: Any) -> int:
    return int(model.history.filter(**filters).count())


def table_count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{table}"')  # noqa: S608 (a test's own table name)
        return int(cursor.fetchone()[0])
