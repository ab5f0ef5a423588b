"""Typed readers for environment variables that fail loudly.

Settings are read once, in ``mutt_project/settings.py``, through these helpers. Each takes the
environment as a mapping (so tests can pass their own) and raises ``ImproperlyConfigured`` naming the
variable and the expected form when a value is malformed, instead of silently falling back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, default).strip()


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off.")


def env_int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum of {maximum}.")
    return value


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_NAME = re.compile(r"[a-z0-9_-]+")


def env_names(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    """A comma-separated list of names (lower-case letters, digits, ``_`` and ``-``), at least one, none twice:
    names that key Redis state and streams, where a typo or a repeat must stop start-up rather than be kept."""
    raw = env.get(name)
    values = [item.strip() for item in raw.split(",")] if raw is not None else list(default)
    bad = [value for value in values if not _NAME.fullmatch(value)]
    if bad or not values:
        raise ImproperlyConfigured(
            f"{name}={raw!r} must be names separated by commas, each of lower-case letters, digits, '_' and '-'."
        )
    if len(set(values)) < len(values):
        raise ImproperlyConfigured(f"{name}={raw!r} names one more than once.")
    return values


def env_path(env: Mapping[str, str], name: str, default: Path, *, base: Path) -> Path:
    """A filesystem path; relative values are taken relative to ``base`` (the project folder)."""
    raw = env.get(name, "").strip()
    path = Path(raw).expanduser() if raw else default
    if not path.is_absolute():
        path = base / path
    return path.resolve()


def env_secret(env: Mapping[str, str], name: str) -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (the file wins when both are set).

    Bootstrap secrets such as the Django secret key are needed before the configuration center can
    run; every other secret goes through ``core.secrets``.
    """
    file_name = env.get(f"{name}_FILE", "").strip()
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}.") from None
    return env.get(name, "").strip()


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> dict[str, Any]:
    """Turn ``postgres://user:password@host:port/dbname?sslmode=require`` into a DATABASES entry.

    PostgreSQL is the only database MUTT runs on (partitions, JSONB and multi-row upserts are part of
    the design), so any other scheme is a configuration error. A ``host`` query parameter may name a
    Unix socket folder, as libpq allows.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// URL (PostgreSQL is the only supported database), got scheme "
            f"{parts.scheme!r}."
        )
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ImproperlyConfigured(f"{name} must name a database, e.g. postgres://user@host:5432/mutt.")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port.") from None
    host = unquote(parts.hostname or "") or options.pop("host", "")
    options.pop("host", None)
    return {
        "ENGINE": "core.db.postgresql",
        "NAME": dbname,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "OPTIONS": options,
    }


def check_redis_url(url: str, *, name: str = "REDIS_URL") -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, got {parts.scheme!r}.")
    return url


def env_header(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``Header-Name: value`` -> Django's ``("HTTP_HEADER_NAME", "value")`` (for SECURE_PROXY_SSL_HEADER)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    header, sep, value = raw.partition(":")
    header, value = header.strip(), value.strip()
    if not sep or not value or not header.replace("-", "").isalnum():
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not of the form 'Header-Name: value', e.g. 'X-Forwarded-Proto: https'."
        )
    return "HTTP_" + header.upper().replace("-", "_"), value
