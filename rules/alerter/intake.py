"""The alerter's consumer in the ingest stream's group: what it reads, takes over, keeps and sweeps.

New entries are read on a connection of their own (``DeferredCommand``), so a pipelined alerter can send
the next read as soon as a batch is taken and let Redis answer it while this batch is evaluated. Entries
another alerter left unacknowledged past the claim timeout are taken over, with their delivery counts
checked (an entry delivered too often is dead-lettered, not matched again). A batch held through a
database outage has its claim refreshed so no other alerter takes it while this one lives. Now and then,
the consumers of alerters that are gone are removed from the group.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from configcenter.runtime import get_setting
from core import outage, streams
from core.contracts import ALERTERS_GROUP
from core.redis import DeferredCommand
from rules import metrics
from rules.alerter.evaluate import Entry

logger = logging.getLogger("mutt.alerter")

CONSUMER_SWEEP_SECONDS = 60.0  # how often an alerter removes the consumers killed alerters left in the group


def _stream_position(entry_id: bytes) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split(b"-"))


def _field_dict(pairs: list[bytes]) -> dict[bytes, bytes]:
    if len(pairs) == 2:  # the one field ingest writes
        return {pairs[0]: pairs[1]}
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


class Intake:
    def __init__(self, client: redis.Redis, *, stream: str, consumer: str) -> None:
        self.client = client
        self.stream = stream
        self.consumer = consumer
        self._reader = DeferredCommand(client)
        self._last_claim = 0.0
        self._swept_at = -CONSUMER_SWEEP_SECONDS  # the first step sweeps

    @property
    def read_ahead(self) -> bool:
        """A read is in flight: its entries, once it is answered, are this consumer's."""
        return self._reader.in_flight

    def close(self) -> None:
        """Give the reading connection back to the pool."""
        self._reader.close()

    def read_new(self, block_ms: int | None) -> list[Entry]:
        """Up to a batch of new entries: those read ahead if a read is in flight, else read now, waiting
        up to ``block_ms`` (None: the ``alerter_block_ms`` setting; 0: not at all) for some to come."""
        if not self._reader.in_flight:
            self.send_read(get_setting("alerter_block_ms") if block_ms is None else block_ms)
        return self.take_read()

    def send_read(self, block_ms: int) -> None:
        command: list[Any] = [
            "XREADGROUP", "GROUP", ALERTERS_GROUP, self.consumer, "COUNT", get_setting("alerter_batch_size"),
        ]  # fmt: skip
        if block_ms:  # Redis's BLOCK 0 would mean "wait for ever"
            command += ["BLOCK", block_ms]
        self._reader.send(*command, "STREAMS", self.stream, ">")

    def take_read(self) -> list[Entry]:
        """The entries of the read in flight, from Redis's reply as it is: nil, or the one stream's
        entries as [id, [field, value, ...]] under its name (a map in RESP3, a pair in RESP2)."""
        reply = self._reader.result()
        if not reply:
            return []
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return [(entry_id, _field_dict(pairs)) for entry_id, pairs in entries]

    def claim_abandoned(self) -> list[Entry]:
        """Take over entries another alerter left unacknowledged for longer than the visibility timeout."""
        idle_seconds = get_setting("alerter_claim_idle_seconds")
        now = time.monotonic()
        if now - self._last_claim < min(idle_seconds / 2, 5.0):
            return []
        self._last_claim = now
        claimed = streams.claim_abandoned(
            self.client, self.stream, ALERTERS_GROUP, self.consumer,
            idle_ms=int(idle_seconds * 1000), count=get_setting("alerter_batch_size"),
        )  # fmt: skip
        if claimed:
            metrics.RECLAIMED.inc(len(claimed))
            logger.warning("took over %d entries from a stalled alerter", len(claimed))
        return claimed

    def delivery_counts(self, entries: list[Entry]) -> dict[bytes, int]:
        if not entries:
            return {}
        # A batch held through an outage may hold entries out of stream order: bound it by its extremes.
        ids = sorted((entry_id for entry_id, _ in entries), key=_stream_position)
        rows: list[dict[str, Any]] = self.client.xpending_range(
            self.stream, ALERTERS_GROUP, min=ids[0], max=ids[-1], count=len(entries) * 2,
            consumername=self.consumer,
        )  # fmt: skip
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    def keep_claimed(self, entries: list[Entry]) -> None:
        """Refresh this consumer's claim on ``entries`` (held through an outage) so they are not taken over."""
        ids = [entry_id for entry_id, _ in entries]
        try:
            streams.keep_claimed(self.client, self.stream, ALERTERS_GROUP, self.consumer, ids)
        except redis.RedisError as exc:
            if streams.is_missing_group(exc):  # Redis restarted empty: nothing to keep, but reads need the group
                streams.recreate_group(self.client, self.stream, ALERTERS_GROUP, consumer=self.consumer)
            else:
                outage.warn_or_report(exc, logger, "could not refresh the claim on held entries (%s)")

    def forget_dead_consumers(self) -> list[str]:
        """Now and then, remove from the group the consumers of alerters that are gone: nothing pending, not
        seen for ``consumer_forget_idle_seconds`` (never this one). Returns their names."""
        now = time.monotonic()
        if now - self._swept_at < CONSUMER_SWEEP_SECONDS:
            return []
        self._swept_at = now
        try:
            removed = streams.forget_idle_consumers(
                self.client, self.stream, ALERTERS_GROUP,
                idle_seconds=get_setting("consumer_forget_idle_seconds"), keep=[self.consumer],
            )  # fmt: skip
        except redis.RedisError as exc:
            outage.warn_or_report(
                exc, logger, "could not look for consumers of stopped alerters (%s); next sweep retries"
            )
            return []
        if removed:
            logger.info("removed %d idle consumers of stopped alerters", len(removed), extra={"consumers": removed})
        return removed
