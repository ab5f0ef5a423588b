"""The ``events`` and ``archives`` retention policies (retention.service calls them by dotted path).

``events``: every partition of the audit log whose whole range ended more than
``event_retention_days`` ago is archived, verified, detached and dropped (:mod:`.lifecycle`), and
archives left unfinished by an earlier run are finished first. ``archives``: archives whose range ended
more than ``archive_retention_days`` ago have their files deleted (state ``expired``). Both read their
setting from the config center on every run, and the legal hold suspends what they delete.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from configcenter.runtime import get_setting
from retention.archive import faults
from retention.archive.export import prefix_for
from retention.archive.lifecycle import IN_PROGRESS, advance
from retention.archive.store import ArchiveStore, get_store
from retention.models import ArchivedPartition, ArchiveState, RetentionRun
from retention.partitions import Partition, list_partitions
from retention.policies import PlanItem, Progress

logger = logging.getLogger("mutt.retention.archive")

_LOCK_KEY = 0x6D757474_61726368  # pg_advisory_lock key of the events policy ("mutt" "arch")


class ArchivalBusy(RuntimeError):
    """Another process is archiving the event audit log right now."""


def expired_partitions(now: datetime) -> tuple[datetime, list[Partition]]:
    cutoff = now - timedelta(days=int(get_setting("event_retention_days")))
    expired = [p for p in list_partitions() if not p.is_default and p.end is not None and p.end <= cutoff]
    return cutoff, expired


class EventsPolicy:
    name = "events"

    def plan(self, now: datetime) -> list[PlanItem]:
        cutoff, expired = expired_partitions(now)
        items = [
            PlanItem(
                "events",
                "finish_archive",
                a.partition,
                rows=a.rows or None,
                bytes=a.bytes or None,
                start=a.range_start,
                end=a.range_end,
                deletes=a.state in (ArchiveState.VERIFIED, ArchiveState.DETACHED),
                note=f"archive #{a.generation} left {a.state} by an earlier run",
            )
            for a in ArchivedPartition.objects.filter(state__in=IN_PROGRESS).order_by("range_start")
        ]
        busy = {item.target for item in items}
        items += [
            PlanItem(
                "events",
                "archive_and_drop",
                p.name,
                rows=p.row_estimate,
                bytes=p.bytes,
                start=p.start,
                end=p.end,
                deletes=True,
                note=f"ended before {cutoff:%Y-%m-%d %H:%M} (event_retention_days)",
            )
            for p in expired
            if p.name not in busy
        ]
        return items

    def apply(self, run: RetentionRun, now: datetime, *, hold: bool, progress: Progress) -> None:
        store = get_store()
        store.check()  # unreachable: the run fails here, before anything is exported or dropped
        run.details["store"] = store.url
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY])
            if not cursor.fetchone()[0]:
                raise ArchivalBusy("another process is archiving the event audit log")
        try:
            self._apply(run, now, hold=hold, progress=progress, store=store)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])

    def _apply(self, run: RetentionRun, now: datetime, *, hold: bool, progress: Progress, store: ArchiveStore) -> None:
        cutoff, expired = expired_partitions(now)
        run.details["cutoff"] = cutoff.isoformat()
        work = list(ArchivedPartition.objects.filter(state__in=IN_PROGRESS).order_by("range_start"))
        busy = {archive.partition for archive in work}
        for partition in expired:
            if partition.name in busy or partition.start is None or partition.end is None:
                continue
            latest = ArchivedPartition.objects.filter(partition=partition.name).aggregate(g=Max("generation"))["g"]
            work.append(
                ArchivedPartition.objects.create(
                    partition=partition.name,
                    generation=(latest or 0) + 1,
                    range_start=partition.start,
                    range_end=partition.end,
                    store=store.url,
                    run=run,
                    state=ArchiveState.EXPORTING,
                )
            )
        for archive in work:
            try:
                advance(archive, store=store, run=run, hold=hold, who=run.actor, progress=progress)
            except Exception as exc:
                logger.error("archival of %s failed, partition kept: %s", archive.partition, exc)
                run.details.setdefault("errors", []).append({"partition": archive.partition, "error": str(exc)})
                raise
        if hold and work:
            run.details["held"] = [a.partition for a in work if a.state != ArchiveState.DROPPED]


class ArchivesPolicy:
    name = "archives"

    def _expired(self, now: datetime) -> tuple[datetime, list[ArchivedPartition]]:
        cutoff = now - timedelta(days=int(get_setting("archive_retention_days")))
        states = (ArchiveState.DROPPED, ArchiveState.REJECTED)
        return cutoff, list(ArchivedPartition.objects.filter(state__in=states, range_end__lte=cutoff))

    def plan(self, now: datetime) -> list[PlanItem]:
        cutoff, expired = self._expired(now)
        return [
            PlanItem(
                "archives",
                "expire",
                f"{a.partition}#{a.generation}",
                rows=a.rows,
                bytes=a.bytes,
                start=a.range_start,
                end=a.range_end,
                deletes=True,
                note=f"range ended before {cutoff:%Y-%m-%d} (archive_retention_days)",
            )
            for a in expired
        ]

    def apply(self, run: RetentionRun, now: datetime, *, hold: bool, progress: Progress) -> None:
        cutoff, expired = self._expired(now)
        run.details["cutoff"] = cutoff.isoformat()
        if hold:
            run.details["held"] = [f"{a.partition}#{a.generation}" for a in expired]
            return
        if not expired:
            return
        store = get_store()
        store.check()
        removed = run.details.setdefault("expired", [])
        for done, archive in enumerate(expired):
            # Every key under the archive's prefix: listed files, the manifest and anything a crash left.
            keys = store.keys(prefix_for(archive.partition, archive.generation))
            for key in keys:
                store.delete(key)
            faults.checkpoint("expire")  # files gone, not yet recorded: the next run deletes nothing more
            archive.state = ArchiveState.EXPIRED
            archive.expired_at = timezone.now()
            archive.save(update_fields=["state", "expired_at"])
            run.rows_deleted += archive.rows
            run.bytes_deleted += archive.bytes
            removed.append(
                {
                    "partition": archive.partition,
                    "generation": archive.generation,
                    "rows": archive.rows,
                    "range_start": archive.range_start.isoformat(),
                    "range_end": archive.range_end.isoformat(),
                    "files": archive.files,
                    "store": archive.store,
                }
            )
            progress.update(done + 1, len(expired), "expire archives")
