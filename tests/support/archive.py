"""Helpers and fixtures of the archival tests: old partitions of realistic rows, stores, runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.db import connection
from django.utils import timezone

from retention.models import RetentionRun, RunOutcome
from tests.support.s3_server import ACCESS_KEY, SECRET_KEY, S3Server

TABLE = "rules_eventauditlog"


class NoProgress:
    def __init__(self) -> None:
        self.calls = 0

    def update(self, done: int, total: int | None, label: str) -> None:
        self.calls += 1


def name_of(start: datetime) -> str:
    return f"{TABLE}_y{start.year:04d}m{start.month:02d}"


def make_partition(start: datetime, end: datetime, name: str | None = None) -> str:
    name = name or name_of(start)
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{name}" PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)', [start, end])
    return name


# Rows as the alerter writes them, with what makes an export go wrong if anything does: NULLs beside
# empty strings, commas, quotes, newlines, backslashes, non-ASCII, and raw JSON whose spacing must survive.
def fill(start: datetime, rows: int, *, seconds_apart: float = 1.0) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO rules_eventauditlog (event_id, event_time, received_at, hostname, environment, rule_id,
                handling, team, forwarded, alert_severity, syslog_severity, message, trap_oid, source_type,
                correlation_id, raw, dead_letter_reason)
            SELECT md5(g::text || %s)::uuid,
                   %s::timestamptz + make_interval(secs => g * %s) + (g %% 1000) * interval '1 microsecond',
                   %s::timestamptz + make_interval(secs => g * %s + 0.25),
                   'edge-' || lpad((g %% 500)::text, 3, '0') || '.dc1.example.net',
                   (ARRAY['prod', 'dev', 'uat'])[g %% 3 + 1],
                   CASE WHEN g %% 4 = 0 THEN NULL ELSE g %% 1000 END,
                   (ARRAY['matched', 'no_match', 'dead_lettered'])[g %% 3 + 1],
                   CASE WHEN g %% 5 = 0 THEN '' ELSE 'netops' END,
                   g %% 2 = 0,
                   CASE WHEN g %% 2 = 0 THEN 'Critical' ELSE '' END,
                   CASE WHEN g %% 7 = 0 THEN NULL ELSE (g %% 8)::smallint END,
                   CASE g %% 6
                     WHEN 0 THEN 'link down on ge-0/0/' || g || ', "peer" lost'
                     WHEN 1 THEN E'multi\\nline\\r\\nmessage with \\\\ backslash'
                     WHEN 2 THEN 'température élevée ⚠ ' || g
                     WHEN 3 THEN ''
                     ELSE 'BGP neighbor 10.0.' || (g %% 255) || '.1 state Idle'
                   END,
                   CASE WHEN g %% 3 = 0 THEN '1.3.6.1.4.1.9.9.41.2.0.1' ELSE '' END,
                   (ARRAY['syslog', 'snmp_trap', 'api'])[g %% 3 + 1],
                   md5(g::text),
                   ('{"host": "edge-' || g || '",  "message": "m\\u00e9 ' || g || '" , "n": [1, 2.50]}')::json,
                   CASE WHEN g %% 3 = 2 THEN 'no rule matched' ELSE '' END
            FROM generate_series(1, %s) AS g
            """,
            [start.isoformat(), start, seconds_apart, start, seconds_apart, rows],
        )


def rows_of(table: str, where: str = "") -> list[tuple[Any, ...]]:
    """Every row of ``table`` (the archived columns, raw as text) in id order, for exact comparisons."""
    from retention.archive.schema import NAMES

    columns = ", ".join(f"{name}::text" if name == "raw" else name for name in NAMES)
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT {columns} FROM "{table}" {where} ORDER BY id')  # noqa: S608 (names from the catalogue or constants, values bound)
        return cursor.fetchall()


def table_state(name: str) -> str:
    from retention.archive.ddl import attachment

    return attachment(name)


def run_policy(policy: Any, now: datetime, *, hold: bool = False, actor: str = "cli:test") -> RetentionRun:
    """What the orchestrator does around a policy: a run record, the call, the outcome (failed on raise)."""
    run = RetentionRun.objects.create(policy=policy.name, actor=actor, reason="test")
    try:
        policy.apply(run, now, hold=hold, progress=NoProgress())
    except Exception as exc:
        run.outcome, run.error = RunOutcome.FAILED, f"{type(exc).__name__}: {exc}"
    else:
        run.outcome = RunOutcome.HELD if hold else RunOutcome.DONE
    run.finished_at = timezone.now()
    run.save()
    return run


def drop_test_tables(prefix_year_below: int = 2025) -> None:
    """Drop partitions (attached or detached) of test months and the restored table; empty the log."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relname ~ %s",
            [rf"^{TABLE}_y(19|20[01]|202[0-4])\d*m\d\d"],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
        cursor.execute(f'DROP TABLE IF EXISTS "{TABLE}_restored"')
        cursor.execute(f"TRUNCATE {TABLE}")


@pytest.fixture
def archive_db(transactional_db):
    """A committed database (subprocesses see it) with no test partition left before or after."""
    drop_test_tables()
    yield
    drop_test_tables()


@pytest.fixture
def folder_store(settings, tmp_path) -> Path:
    settings.MUTT_ARCHIVE_URL = str(tmp_path / "archive")
    return tmp_path / "archive"


@pytest.fixture
def s3_store(settings) -> dict[str, Any]:
    """A fresh bucket on the session's S3 server, set as the archive store (credentials as secrets)."""
    server = S3Server.shared()
    bucket = f"mutt-archive-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=bucket)
    settings.MUTT_ARCHIVE_URL = f"s3://{bucket}/audit"
    settings.MUTT_ARCHIVE_S3_ENDPOINT = server.url
    settings.MUTT_ARCHIVE_S3_REGION = "us-east-1"
    settings.MUTT_SECRETS_ENV = {
        **settings.MUTT_SECRETS_ENV,
        "ARCHIVE_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "ARCHIVE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    return {"client": client, "bucket": bucket, "prefix": "audit", "endpoint": server.url}


def month(year: int, number: int) -> datetime:
    return datetime(year, number, 1, tzinfo=UTC)
