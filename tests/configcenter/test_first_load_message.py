"""A process's first settings load says which source failed, at a level that fits: Redis answering without
a copy of the settings is how every installation starts, not "neither Redis nor the database answered".

Each case is a fresh process (the first load happens once per process) with a Redis prefix of its own, so
Redis has no copy of the settings."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]
FIRST_LOAD = "import django; django.setup(); from configcenter import runtime; print('SOURCE', runtime.reload().source)"
NO_DATABASE = "postgres://postgres@127.0.0.1:9/mutt"  # nothing listens on port 9: refused at once


def first_load(redis_url: str, *, database_url: str | None = None, database_name: str | None = None) -> list[str]:
    """The first settings load of a fresh process. Without ``database_url`` the process finds this run's
    PostgreSQL as the suite does (the machine's server, or the embedded one by its socket), under
    ``database_name``."""
    env = {k: v for k, v in os.environ.items() if k != "MUTT_DATABASE_NAME"}
    env.update(
        DJANGO_SETTINGS_MODULE="mutt_project.settings", REDIS_URL=redis_url,
        MUTT_REDIS_PREFIX=f"first-load-{uuid.uuid4().hex[:8]}", MUTT_LOG_FORMAT="plain", MUTT_LOG_LEVEL="INFO",
    )  # fmt: skip
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if database_name is not None:
        env["MUTT_DATABASE_NAME"] = database_name
    done = subprocess.run(
        [sys.executable, "-c", FIRST_LOAD], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return (done.stdout + done.stderr).splitlines()


def settings_lines(output: list[str]) -> list[str]:
    return [line for line in output if "mutt.config" in line]


@pytest.fixture
def unmigrated_database(db) -> Iterator[str]:
    """A database of its own with no tables: what ``mutt up`` finds before its first migrate."""
    params = connection.settings_dict
    name = f"mutt_unmigrated_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(
        host=params["HOST"], port=params["PORT"], user=params["USER"], password=params["PASSWORD"], dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name  # a URL cannot name the embedded server's socket folder: the name is passed on its own
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}"')
        admin.close()


def test_a_first_start_before_migrate_is_info_and_says_nothing_is_stored(unmigrated_database, settings):
    output = first_load(settings.REDIS_URL, database_name=unmigrated_database)
    assert "SOURCE defaults" in output
    lines = settings_lines(output)
    assert len(lines) == 1, output
    assert " INFO " in lines[0]
    assert "no settings stored yet (the database is not migrated); using the setting defaults" in lines[0]
    assert not [line for line in output if " ERROR " in line or "neither Redis nor the database" in line]


def test_redis_without_a_copy_and_the_database_down_is_a_warning_naming_the_database(settings):
    output = first_load(settings.REDIS_URL, database_url=NO_DATABASE)
    assert "SOURCE defaults" in output
    lines = settings_lines(output)
    assert len(lines) == 1, output
    assert " WARNING " in lines[0]
    assert "Redis has no copy of the settings and the database did not answer (" in lines[0]
    assert "Traceback" not in "\n".join(output)


def test_neither_source_answering_is_still_said_as_such(tmp_path):
    output = first_load(f"unix://{tmp_path}/no-redis.sock", database_url=NO_DATABASE)
    assert "SOURCE defaults" in output
    assert [line for line in settings_lines(output) if "neither Redis nor the database answered" in line]
