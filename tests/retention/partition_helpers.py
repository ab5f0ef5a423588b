"""Shared by the partition tests: audit rows at chosen times, the partitions a test made dropped after it,
settings changed as an operator would."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from django.db import connection

from core.audit import Actor
from retention.partitions import DEFAULT, TABLE, list_partitions
from tests.support.runtime_settings import changing_settings

OPS = Actor.cli("partition-tests")


INSERT_ROW = (
    f"INSERT INTO {TABLE} (event_id, event_time, received_at, hostname, environment, handling, raw)"  # noqa: S608
    " VALUES (%s, %s, %s, %s, 'prod', 'no_match', '{}')"
)


def audit_rows_at(moments: list[datetime], *, host: str = "edge-001") -> list[uuid.UUID]:
    """One audit row per moment, through the log (PostgreSQL routes each); their event ids."""
    ids = [uuid.uuid4() for _ in moments]
    with connection.cursor() as cursor:
        cursor.executemany(
            INSERT_ROW,
            [(event_id, moment, moment, host) for event_id, moment in zip(ids, moments, strict=True)],
        )
    return ids


def rows_in(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{table}"')  # noqa: S608
        return int(cursor.fetchone()[0])


def all_event_ids() -> list[uuid.UUID]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT event_id FROM {TABLE}")  # noqa: S608
        return [row[0] for row in cursor.fetchall()]


def spans() -> list[tuple[str, str, str]]:
    """(name, start, end) of every range partition, dates only."""
    return [
        (p.name, p.start.date().isoformat(), p.end.date().isoformat())
        for p in list_partitions()
        if p.start is not None and p.end is not None
    ]


def drop_partitions_made_since(before: set[str]) -> None:
    """Drop what a committing test made (partitions, pending tables) and empty the log."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s AND relname <> %s",
            [TABLE + "_y%", DEFAULT],
        )
        for (name,) in cursor.fetchall():
            if name not in before:
                cursor.execute(f'DROP TABLE "{name}"')
        cursor.execute(f'TRUNCATE "{TABLE}"')  # unmanaged: the test database's flush leaves it


@pytest.fixture
def clean_partitions(transactional_db) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s", [TABLE + "_y%"])
        before = {name for (name,) in cursor.fetchall()}
        cursor.execute(f'TRUNCATE "{TABLE}"')
    yield
    drop_partitions_made_since(before)


@pytest.fixture
def change_settings(django_capture_on_commit_callbacks) -> Iterator[Callable[..., None]]:
    """``change_settings(partition_interval="day")`` through the service, read at once; defaults back after."""
    with changing_settings(django_capture_on_commit_callbacks, OPS, "partition test") as change:
        yield change
