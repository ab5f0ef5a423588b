"""Delivery's database state: the audit trail of operations on the dead-letter queues.

DLQ entries live in Redis streams (see :mod:`delivery.dlq`); what is done to them (replay, purge,
move to the dead queue), by whom and why, is recorded here, one append-only row per operation.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from core import contracts
from core.choices import text_choices

DlqQueue = text_choices("DlqQueue", contracts.DLQ_QUEUE_LABELS, module=__name__)


class DlqActionKind(models.TextChoices):
    REPLAY = "replay", "Replay"
    PURGE = "purge", "Purge"
    DEAD = "dead", "Move to the dead queue"


class DlqOutcome(models.TextChoices):
    DONE = "done", "Done: every entry"
    PARTIAL = "partial", "Partial: some entries were gone or refused"
    NOTHING = "nothing", "Nothing: no entry was changed"


class AppendOnlyError(RuntimeError):
    """An audit row may be written once and never changed or deleted (retention removes rows in bulk)."""


class DlqAction(models.Model):
    """One operation on DLQ entries: who, when, why, on which entries, and what came of it."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=200, help_text="Who acted (user:, apikey:, cli:, system:).")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    queue = models.CharField(max_length=16, choices=DlqQueue.choices)
    action = models.CharField(max_length=16, choices=DlqActionKind.choices)
    entry_ids = models.JSONField(default=list, help_text="The stream ids the operation was asked to act on.")
    count = models.PositiveIntegerField(default=0, help_text="Entries actually changed.")
    outcome = models.CharField(max_length=16, choices=DlqOutcome.choices)
    details = models.JSONField(default=dict, help_text="Entry ids by result (replayed, dead, purged, missing, ...).")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "DLQ action"
        permissions = [("manage_dlq", "Can view, replay, purge and move dead-letter queue entries")]

    def __str__(self) -> str:
        return f"{self.action} {self.count} {self.queue} entries by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("DLQ actions are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("DLQ actions are append-only")
