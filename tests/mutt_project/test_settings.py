"""Settings: loud failures on bad values, embedded services without URLs, real ones with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.envparse import env_bool, env_int, env_secret, parse_database_url
from mutt_project import embedded

BASE_DIR = Path(__file__).resolve().parents[2]


def test_bad_boolean_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="MUTT_DEBUG='maybe'"):
        env_bool({"MUTT_DEBUG": "maybe"}, "MUTT_DEBUG")


def test_integers_are_checked_for_form_and_bounds():
    assert env_int({}, "MUTT_HTTP_PORT", 8000) == 8000
    with pytest.raises(ImproperlyConfigured, match="MUTT_HTTP_PORT='eighty' is not an integer"):
        env_int({"MUTT_HTTP_PORT": "eighty"}, "MUTT_HTTP_PORT", 8000)
    with pytest.raises(ImproperlyConfigured, match="above the maximum of 65535"):
        env_int({"MUTT_HTTP_PORT": "70000"}, "MUTT_HTTP_PORT", 8000, maximum=65535)


def test_database_url_is_parsed_with_options():
    parsed = parse_database_url("postgres://mutt:s%40cret@db.example:6432/mutt?sslmode=require")
    assert parsed["NAME"] == "mutt"
    assert (parsed["USER"], parsed["PASSWORD"], parsed["HOST"], parsed["PORT"]) == (
        "mutt",
        "s@cret",
        "db.example",
        "6432",
    )
    assert parsed["OPTIONS"] == {"sslmode": "require"}


def test_database_url_may_name_a_socket_folder():
    parsed = parse_database_url("postgresql://postgres@/mutt?host=/run/postgresql")
    assert parsed["HOST"] == "/run/postgresql"
    assert parsed["OPTIONS"] == {}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///db.sqlite3", "PostgreSQL is the only supported database"),
        ("postgres://host:5432/", "must name"),
    ],
)
def test_database_url_refuses_other_databases_and_missing_names(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_database_url(url)


def test_secret_file_wins_over_variable(tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text("from-file\n")
    assert env_secret({"X": "from-env", "X_FILE": str(secret_file)}, "X") == "from-file"
    with pytest.raises(ImproperlyConfigured, match="X_FILE"):
        env_secret({"X_FILE": str(tmp_path / "missing")}, "X")


def load_settings(env: dict[str, str]) -> dict:
    """Import the real settings module in a fresh process with exactly this environment."""
    code = (
        "import json, django; from django.conf import settings; django.setup();"
        "db = settings.DATABASES['default'];"
        "print(json.dumps({'host': db['HOST'], 'name': db['NAME'], 'port': db['PORT'], 'user': db['USER'],"
        " 'redis': settings.REDIS_URL, 'embedded_pg': settings.MUTT_EMBEDDED_POSTGRES,"
        " 'embedded_redis': settings.MUTT_EMBEDDED_REDIS}))"
    )
    base = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "mutt_project.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_urls_settings_point_at_embedded_services_of_the_data_dir(tmp_path):
    loaded = load_settings({"MUTT_DATA_DIR": str(tmp_path)})
    assert loaded["embedded_pg"]
    assert loaded["embedded_redis"]
    assert loaded["host"] == str(embedded.pg_socket_dir(tmp_path.resolve()))
    assert loaded["name"] == "mutt"
    assert loaded["redis"] == embedded.redis_url(tmp_path.resolve())
    assert not (tmp_path / "pg").exists(), "loading settings must not start anything"


def test_with_urls_settings_use_the_given_servers(tmp_path):
    loaded = load_settings(
        {
            "MUTT_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/mutt",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        }
    )
    assert not loaded["embedded_pg"]
    assert not loaded["embedded_redis"]
    assert (loaded["host"], loaded["port"], loaded["name"], loaded["user"]) == (
        "127.0.0.1",
        "5432",
        "mutt",
        "postgres",
    )
    assert loaded["redis"] == "redis://127.0.0.1:6379/0"


def test_a_malformed_variable_stops_start_up_with_its_name(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={"PATH": "/usr/bin:/bin", "MUTT_DATA_DIR": str(tmp_path), "REDIS_URL": "http://cache:6379"},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_URL must be a redis://" in result.stderr


def test_misconfiguration_is_a_system_check_with_an_id(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        env={
            "PATH": "/usr/bin:/bin",
            "MUTT_DATA_DIR": str(tmp_path),
            "MUTT_HTTP_WORKERS": "64",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/mutt",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        },
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert "mutt.W002" in output
    assert "mutt.W001" in output
