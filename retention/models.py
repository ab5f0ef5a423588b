"""What retention did: one :class:`RetentionRun` per run, and the inventory of archived partitions.

A run record is the evidence a compliance team reads: who ran which policy, whether it was a dry
run, what it archived and deleted (rows, bytes, files and their checksums, time ranges, counts per
reason) and how it ended. Where a deletion removes audit evidence itself (DLQ entries, history
rows), the run record keeps the counts and the time range that went.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.audit import REASON_MAX_LENGTH


class RunOutcome(models.TextChoices):
    RUNNING = "running", "running"  # started, not finished (or killed: a later run finishes its work)
    DONE = "done", "done"  # changed something
    IDLE = "idle", "idle"  # nothing to do
    HELD = "held", "held"  # deletions suspended by the legal hold; archiving may still have run
    FAILED = "failed", "failed"  # stopped on an error (``error`` says which); what was not verified was kept


class RetentionRun(models.Model):
    policy = models.CharField(max_length=50, help_text="events, dlq, history, archives or partitions.")
    actor = models.CharField(max_length=200, help_text="Who ran it (user:…, cli:…, system:scheduler).")
    reason = models.CharField(max_length=REASON_MAX_LENGTH, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    dry_run = models.BooleanField(default=False)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=RunOutcome.choices, default=RunOutcome.RUNNING)
    rows_archived = models.BigIntegerField(default=0)
    rows_deleted = models.BigIntegerField(default=0)
    bytes_archived = models.BigIntegerField(default=0)
    bytes_deleted = models.BigIntegerField(default=0)
    # Per policy: partitions, files with their SHA-256, counts per reason, time ranges removed, ...
    details = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["policy", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.policy} {self.outcome} {self.started_at:%Y-%m-%d %H:%M}"


class ArchiveState(models.TextChoices):
    EXPORTING = "exporting", "exporting"  # files being written; the partition is untouched
    EXPORTED = "exported", "exported"  # files and manifest in the store, not yet read back
    VERIFIED = "verified", "verified"  # files read back and matched the partition
    REJECTED = "rejected", "rejected"  # read back and did NOT match: partition kept, files kept for inquiry
    DETACHED = "detached", "detached"  # the partition is out of the log, not yet dropped
    DROPPED = "dropped", "dropped"  # the partition is gone; the archive is the only copy
    EXPIRED = "expired", "expired"  # the archive files were deleted (archive_retention_days)


class ArchivedPartition(models.Model):
    """One archive of a partition of the event audit log: where its files are and what they hold.

    A partition name can be archived more than once: when events of a dropped month arrive late, the
    partition manager makes that month's partition again and it expires again. Each archive of it is
    a new ``generation`` (its files under their own prefix); at most one per partition is in progress.
    """

    partition = models.CharField(max_length=100)
    generation = models.PositiveIntegerField(default=1, help_text="1 for the first archive of this partition name.")
    range_start = models.DateTimeField()
    range_end = models.DateTimeField()
    state = models.CharField(max_length=10, choices=ArchiveState.choices, default=ArchiveState.EXPORTING)
    store = models.CharField(max_length=500, help_text="The archive store (a folder or an s3:// bucket and prefix).")
    manifest_key = models.CharField(max_length=500, blank=True)
    rows = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    min_id = models.BigIntegerField(null=True, blank=True)
    max_id = models.BigIntegerField(null=True, blank=True)
    schema_version = models.PositiveIntegerField(default=1)
    content_checksum = models.CharField(max_length=64, blank=True, help_text="SHA-256 over the rows' content.")
    files = models.JSONField(default=list, blank=True, help_text="[{key, sha256, bytes, rows}]")
    run = models.ForeignKey(RetentionRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="archives")
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    dropped_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-range_start", "-generation"]
        constraints = [
            models.UniqueConstraint(fields=["partition", "generation"], name="retention_archive_generation_once"),
            # The state machine resumes "the" unfinished archive of a partition: there is never a second.
            models.UniqueConstraint(
                fields=["partition"],
                condition=models.Q(state__in=["exporting", "exported", "verified", "detached"]),
                name="retention_archive_one_in_progress",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.partition} #{self.generation} ({self.state})"
