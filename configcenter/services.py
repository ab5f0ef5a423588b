"""State changes of the configuration center; each takes an explicit actor and is audited."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from configcenter.models import ApiKey, Scope
from core.audit import Actor, audited

if TYPE_CHECKING:
    from django.contrib.auth.models import User

KEY_PREFIX = "mutt"

# The model permissions a person needs to grant a scope: those covering what a key with that scope reaches
# through the API, so a key never does more than its creator could do in the admin. ``read`` reads rules,
# dev hosts, device teams and every runtime setting; ``write`` also adds, changes and deletes the first
# three (changing settings needs ``admin``). ``ingest`` only sends events: anyone who may add keys may
# grant it. ``admin`` reaches everything, secrets status included: superusers only.
_RULE_MODELS = ("rules.{}_alertrule", "rules.{}_devhost", "rules.{}_deviceteam")
SCOPE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    Scope.INGEST: (),
    Scope.READ: (*(m.format("view") for m in _RULE_MODELS), "configcenter.view_dynamicsetting"),
    Scope.WRITE: (
        *(m.format("view") for m in _RULE_MODELS),
        "configcenter.view_dynamicsetting",
        *(m.format(action) for action in ("add", "change", "delete") for m in _RULE_MODELS),
    ),
}


# What the API and ingest tell a request with no key (DRF's own words for it), an empty one or a wrong one.
NO_CREDENTIALS = "Authentication credentials were not provided."
EMPTY_KEY = "Empty API key."
INVALID_KEY = "Invalid or revoked API key."


def presented_key(meta: Mapping[str, Any]) -> str | None:
    """The API key a request presents, stripped: ``X-API-Key``, else ``Authorization: Bearer <key>``.

    None when it presents neither, "" when the key is empty. ``meta`` is the request's WSGI environ
    (``request.META``): ingest runs this per request, and ``request.headers`` would copy every header.
    """
    raw: str = meta.get("HTTP_X_API_KEY", "")
    if not raw:
        scheme, _, raw = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
    return raw.strip()


def hash_key(raw_key: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def split_key(raw_key: str) -> tuple[str, str] | None:
    """``mutt_<prefix>_<secret>`` -> (prefix, raw_key); None when the text is not shaped like a key."""
    parts = raw_key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], raw_key.strip()


def scope_refusals(user: Any, scopes: list[str]) -> list[str]:
    """Why ``user`` may not grant each of ``scopes`` (empty: they may grant them all)."""
    if user.is_active and user.is_superuser:
        return []
    refusals = []
    for scope in scopes:
        if scope == Scope.ADMIN:
            refusals.append("Only a superuser may grant the admin scope.")
        elif scope in SCOPE_PERMISSIONS:
            missing = [perm for perm in SCOPE_PERMISSIONS[scope] if not user.has_perm(perm)]
            if missing:
                refusals.append(f"Granting the {scope} scope needs the permissions {', '.join(missing)}.")
    return refusals


def owner_refusal(user: Any, owner: Any) -> str | None:
    """Why ``user`` may not make ``owner`` the key's owner: a key's changes are recorded under its owner,
    so only a superuser names another user."""
    if owner is None or (user.is_active and user.is_superuser) or owner.pk == user.pk:
        return None
    return "Only a superuser may create a key owned by another user; leave the owner empty or choose yourself."


def check_scopes_grantable(actor: Actor, scopes: list[str], owner: Any = None) -> None:
    """Refuse (PermissionDenied) scopes the actor may not grant, or an owner they may not name.

    A person is held to :func:`scope_refusals`. The command line and system actors (someone with the
    server's shell and database, or bootstrap) are trusted. An API key acting without a person is refused:
    no endpoint creates keys, and one that did would have to decide this first.
    """
    if actor.user is not None:
        refusals = scope_refusals(actor.user, scopes)
        if refusal := owner_refusal(actor.user, owner):
            refusals.append(refusal)
    elif actor.api_key_id is not None:
        refusals = ["An API key cannot create keys."]
    else:
        refusals = []
    if refusals:
        raise PermissionDenied(" ".join(refusals))


def create_api_key(
    *,
    actor: Actor,
    name: str,
    scopes: list[str],
    owner: User | None = None,
    description: str = "",
    reason: str = "",
) -> tuple[ApiKey, str]:
    """Create a key; returns the saved row and the raw key, which is never stored or shown again.

    Raises PermissionDenied when the actor may not grant ``scopes`` (:func:`check_scopes_grantable`).
    """
    check_scopes_grantable(actor, scopes, owner)
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey(
        name=name.strip(),
        owner=owner,
        prefix=prefix,
        key_hash=hash_key(raw_key),
        scopes=list(scopes),
        description=description,
    )
    api_key.full_clean()
    with transaction.atomic(), audited(actor, reason):
        api_key.save()
    return api_key, raw_key


def update_api_key(*, actor: Actor, api_key: ApiKey, description: str, reason: str = "") -> ApiKey:
    """Only the description of a key changes after creation; name, scopes and secret are fixed."""
    with transaction.atomic(), audited(actor, reason):
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        locked.description = description
        locked.save(update_fields=["description"])
    return locked


def revoke_api_key(*, actor: Actor, api_key: ApiKey, reason: str = "") -> ApiKey:
    with transaction.atomic(), audited(actor, reason):
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
    return locked


def find_active_key(raw_key: str) -> ApiKey | None:
    """The active key matching ``raw_key``, compared in constant time; None otherwise."""
    parsed = split_key(raw_key)
    if parsed is None:
        return None
    prefix, full = parsed
    api_key = ApiKey.objects.select_related("owner").filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, hash_key(full)):
        return None
    return api_key


def touch_last_used(api_key: ApiKey) -> None:
    """Record use at most once a minute per key (a conditional UPDATE, so no history row and no lock)."""
    now = timezone.now()
    if api_key.last_used_at and (now - api_key.last_used_at).total_seconds() < 60:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
