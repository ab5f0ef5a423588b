"""DETACH without CONCURRENTLY: short lock waits, retried, so the alerter's inserts never wait long."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from retention.archive import ddl
from tests.support.archive import make_partition, month, table_state

INSERT = (
    "INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, handling, raw)"
    " VALUES (%s, %s, %s, 'edge-001', 'prod', 'no_match', '{}')"
)


def new_connection():
    raw = connection.get_new_connection(connection.get_connection_params())
    raw.autocommit = True
    return raw


def test_detach_waits_out_a_long_insert_transaction_without_blocking_other_inserts(archive_db):
    name = make_partition(month(2018, 1), month(2018, 2))
    now = datetime.now(UTC)
    holder = new_connection()
    holder.autocommit = False
    with holder.cursor() as cursor:  # an insert transaction left open for 1.5 s (a slow alerter COPY)
        cursor.execute(INSERT, [str(uuid.uuid4()), now, now])
    release = threading.Timer(1.5, holder.commit)
    release.start()

    latencies: list[float] = []
    stop = threading.Event()

    def alerter() -> None:
        inserter = new_connection()
        try:
            while not stop.is_set():
                started = time.monotonic()
                with inserter.cursor() as cursor:
                    cursor.execute(INSERT, [str(uuid.uuid4()), now, now])
                latencies.append(time.monotonic() - started)
                time.sleep(0.005)
        finally:
            inserter.close()

    writer = threading.Thread(target=alerter)
    writer.start()
    started = time.monotonic()
    try:
        ddl.detach(name)
        took = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
        release.join()
        holder.close()

    assert table_state(name) == "detached"
    assert took >= 1.0  # it did wait for the open transaction (by retrying) ...
    assert len(latencies) > 20  # ... while the inserts kept going
    assert max(latencies) < ddl.LOCK_TIMEOUT_MS / 1000 + 0.3  # none waited much longer than one attempt


def test_detach_gives_up_clearly_when_the_lock_never_comes(archive_db, monkeypatch):
    name = make_partition(month(2018, 2), month(2018, 3))
    monkeypatch.setattr(ddl, "ATTEMPTS", 3)
    holder = new_connection()
    holder.autocommit = False
    with holder.cursor() as cursor:
        cursor.execute("LOCK TABLE rules_eventauditlog IN ACCESS SHARE MODE")  # a long report query
    try:
        with pytest.raises(ddl.LockTimeout, match="no lock after 3 attempts"):
            ddl.detach(name)
    finally:
        holder.rollback()
        holder.close()
    assert table_state(name) == "attached"
