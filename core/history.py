"""Reading audit trails: a page of history rows with their actors and predecessors in constant queries.

Every history view reads through here: the admin's history pages (``core.admin_audit.HistoryAdmin``),
the API's history endpoints (``core.api.views``, ``configcenter.api.views``) and ``muttctl config
history``. Each shows a row beside the row before it (field-level changes, old and new values).

django-simple-history's own helpers cost a query per row: ``prev_record`` asks the database for
each row's predecessor, and its admin's ``select_related()`` of tracked foreign keys, called with no
names on a model that has none, replaces the join on ``history_user`` with "every non-null foreign
key" (none), so the template then fetches each row's user. Measured on a rule with 30 history rows:
35 queries for its admin history page and 35 for its API history, against 8 and 7 with 2 rows; now 5
and 5 at either length. A page costs its own query plus at most one for the row just older than it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import ForeignKey, Q, QuerySet
from simple_history.utils import get_history_manager_from_history

# A row with no predecessor: the object's creation. Anything older belongs to another life of its key.
CREATED = "+"


def trail(records: QuerySet[Any]) -> QuerySet[Any]:
    """``records`` (history rows) newest first, with the acting user and tracked foreign keys joined."""
    related = [f.name for f in records.model.tracked_fields if isinstance(f, ForeignKey)]
    return records.select_related("history_user", *related).order_by("-history_date", "-history_id")


@dataclass(frozen=True)
class Entry:
    """One history row and the row before it in its object's trail (None for a creation)."""

    record: Any
    previous: Any | None

    def delta(self, *, foreign_keys_are_objs: bool = False) -> Any | None:
        """What this row changed (simple-history's ``ModelDelta``, its ``changes`` a list of field, old,
        new); None for a creation. Foreign keys are ids unless ``foreign_keys_are_objs`` (joined by
        :func:`trail`, so either way no query)."""
        if self.previous is None:
            return None
        return self.record.diff_against(self.previous, foreign_keys_are_objs=foreign_keys_are_objs)


def with_previous(page: Iterable[Any]) -> list[Entry]:
    """Each row of ``page`` (newest first, read through :func:`trail`) with its predecessor.

    A row's predecessor is the next row of the page; the page's oldest row takes the row just older
    than it in its object's trail, fetched in one query. A creation has none, so a trail read by key
    (a runtime setting) never pairs a key's new row with the last row of a deleted one.
    """
    rows = list(page)
    older = [*rows[1:], _older_than(rows[-1])] if rows else []
    return [
        Entry(row, None if row.history_type == CREATED else previous) for row, previous in zip(rows, older, strict=True)
    ]


def _older_than(record: Any) -> Any | None:
    if record.history_type == CREATED:
        return None  # nothing to ask for: the common case of a trail that fits on one page
    when = record.history_date
    older = Q(history_date__lt=when) | Q(history_date=when, history_id__lt=record.history_id)
    return trail(get_history_manager_from_history(record).filter(older)).first()
