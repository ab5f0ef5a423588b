"""Secrets: the only way MUTT code reads a credential (ARCHITECTURE.md §6, docs/secrets.md).

A credential has a CURRENT and a NEXT value so that it can be rotated without downtime: connection
factories try CURRENT, then NEXT (see :mod:`core.rotation`). Values come from the first
provider that has the secret:

1. Vault KV v2, ``{VAULT_SECRET_PATH}/{name.lower()}`` on ``VAULT_KV_MOUNT``, fields ``current`` and
   ``next`` (or ``value``, meaning current), when ``VAULT_ADDR`` is set;
2. files named by ``NAME_CURRENT_FILE`` / ``NAME_NEXT_FILE`` (or ``NAME_FILE`` = current), re-read on
   every refresh, so rewriting a file rotates the value without a restart;
3. the environment captured at start: ``NAME_CURRENT`` / ``NAME_NEXT`` (or ``NAME`` = current).

Each process caches a credential for ``SECRET_REFRESH_SECONDS`` and reads it again after that, or at
once through :func:`refresh_secrets` (which connection factories call when a server rejects a
password). When Vault is configured but cannot be read, the last value Vault gave keeps being served;
files and the environment are used only if Vault never answered for that secret.

Values never appear in logs, exception messages or reprs; :func:`mask` gives a fingerprint to show.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from core import vault

logger = logging.getLogger("mutt.secrets")

# Settings that change what a secret resolves to; a change (tests override them) empties the caches.
SECRET_SETTINGS = frozenset(
    {
        "MUTT_SECRET_NAMES",
        "MUTT_SECRETS_ENV",
        "SECRET_REFRESH_SECONDS",
        "VAULT_ADDR",
        "VAULT_AUTH_METHOD",
        "VAULT_TOKEN",
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID_FILE",
        "VAULT_APPROLE_MOUNT",
        "VAULT_KV_MOUNT",
        "VAULT_SECRET_PATH",
        "VAULT_NAMESPACE",
        "VAULT_CA_BUNDLE",
        "VAULT_TIMEOUT",
    }
)


class UnknownSecret(LookupError):
    """A name that is not in ``settings.MUTT_SECRET_NAMES``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown secret {name!r}; known secrets: {', '.join(settings.MUTT_SECRET_NAMES)}")


@dataclass(frozen=True)
class Credential:
    """The values of one secret and where they came from (``vault``, ``file``, ``env`` or ``none``)."""

    name: str
    current: str | None = field(repr=False)
    next: str | None = field(repr=False)
    source: str

    def candidates(self) -> list[str]:
        """The values to try, CURRENT first, without empties or duplicates."""
        values: list[str] = []
        for value in (self.current, self.next):
            if value and value not in values:
                values.append(value)
        return values


@dataclass(frozen=True)
class _Entry:
    credential: Credential
    read_at: float  # time.monotonic() of the read
    stale: bool  # Vault could not be read and this is the last value it gave


_cache: dict[str, _Entry] = {}
_last_from_vault: dict[str, Credential] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


# --- reading ------------------------------------------------------------------------------------


def get_credential(name: str) -> Credential:
    """The credential ``name``, read at most every ``SECRET_REFRESH_SECONDS`` per process."""
    _check_known(name)
    entry = _cache.get(name)
    if entry is not None and _is_fresh(entry):
        return entry.credential
    lock = _lock_for(name)
    if entry is not None and not lock.acquire(blocking=False):
        # Another thread is reading it again right now; the previous value stays good meanwhile,
        # so no caller waits on Vault just because the cache aged.
        return entry.credential
    if entry is None:
        lock.acquire()
    try:
        entry = _cache.get(name)
        if entry is None or not _is_fresh(entry):
            entry = _load(name)
        return entry.credential
    finally:
        lock.release()


def get_secret(name: str) -> str | None:
    """The value to use now: CURRENT, else NEXT, else None."""
    credential = get_credential(name)
    return credential.current or credential.next


def refresh_secrets(name: str | None = None) -> None:
    """Read ``name`` (or every secret) again now, from every provider.

    Calls that overlap share one read: a caller that had to wait while another thread re-read the
    secret takes that result, which is newer than its own call, instead of asking Vault again.
    """
    names = [name] if name is not None else list(settings.MUTT_SECRET_NAMES)
    for each in names:
        _check_known(each)
    asked_at = time.monotonic()
    for each in names:
        with _lock_for(each):
            entry = _cache.get(each)
            if entry is None or entry.read_at < asked_at:
                _load(each)


def reset_secrets() -> None:
    """Forget every cached value and stop the Vault client (settings changed, or a test ends)."""
    with _locks_guard:
        _cache.clear()
        _last_from_vault.clear()
    vault.stop()


# --- display ------------------------------------------------------------------------------------


def fingerprint(value: str) -> str:
    """A short HMAC of ``value`` keyed with the deployment's secret key: it tells two values apart (pods share
    the key), but unlike a bare hash it cannot be used to test password guesses offline."""
    return hmac.new(settings.SECRET_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:8]


def mask(value: str | None) -> str:
    """What may be shown of a secret: ``"set (hmac:1a2b3c4d)"`` or ``"not set"``, never the value."""
    return f"set (hmac:{fingerprint(value)})" if value else "not set"


def secret_status() -> list[dict[str, Any]]:
    """One row per known secret: its source, which values are set, and their masked fingerprints."""
    rows = []
    for name in settings.MUTT_SECRET_NAMES:
        credential = get_credential(name)
        entry = _cache.get(name)
        rows.append(
            {
                "name": name,
                "source": credential.source,
                "has_current": bool(credential.current),
                "has_next": bool(credential.next),
                "current": mask(credential.current),
                "next": mask(credential.next),
                "stale": bool(entry and entry.stale),
            }
        )
    return rows


# --- providers ----------------------------------------------------------------------------------


def _load(name: str) -> _Entry:
    """Read ``name`` from the providers in order and cache it (the caller holds the name's lock)."""
    credential, stale = _from_vault(name)
    credential = credential or _from_files(name) or _from_env(name) or Credential(name, None, None, "none")
    previous = _cache.get(name)
    previous_source = previous.credential.source if previous is not None else "none"
    if previous_source != credential.source:
        logger.info("secret %s is read from %s", name, credential.source)
    entry = _Entry(credential, time.monotonic(), stale)
    _cache[name] = entry
    return entry


def _from_vault(name: str) -> tuple[Credential | None, bool]:
    if not vault.is_configured():
        return None, False
    try:
        fields = vault.read_fields(name)
    except vault.VaultUnavailable as exc:
        last = _last_from_vault.get(name)
        outcome = "serving the last value read from Vault" if last else "falling back to files and environment"
        logger.warning("Vault could not be read for secret %s (%s); %s", name, exc.reason, outcome)
        return last, last is not None
    current = _clean(fields.get("current") or fields.get("value")) if fields else None
    following = _clean(fields.get("next")) if fields else None
    if not (current or following):
        # Vault answered that it has no such secret: that is news, not an outage.
        _last_from_vault.pop(name, None)
        return None, False
    credential = Credential(name, current, following, "vault")
    _last_from_vault[name] = credential
    return credential, False


def _from_files(name: str) -> Credential | None:
    env = settings.MUTT_SECRETS_ENV
    current_path = env.get(f"{name}_CURRENT_FILE") or env.get(f"{name}_FILE")
    next_path = env.get(f"{name}_NEXT_FILE")
    if not (current_path or next_path):
        return None
    current = _read_file(name, "current", current_path)
    following = _read_file(name, "next", next_path)
    if not (current or following):
        return None
    return Credential(name, current, following, "file")


def _read_file(name: str, which: str, path: str | None) -> str | None:
    if not path:
        return None
    try:
        return _clean(Path(path).read_text())
    except OSError as exc:
        logger.warning("the %s file of secret %s cannot be read (%s)", which, name, exc.strerror)
        return None


def _from_env(name: str) -> Credential | None:
    env = settings.MUTT_SECRETS_ENV
    current = _clean(env.get(f"{name}_CURRENT") or env.get(name))
    following = _clean(env.get(f"{name}_NEXT"))
    if not (current or following):
        return None
    return Credential(name, current, following, "env")


def _clean(value: object) -> str | None:
    # Files usually end with a newline; surrounding white space is never part of a value (as in
    # envparse.env_secret).
    if not isinstance(value, str):
        return None
    return value.strip() or None


# --- plumbing -----------------------------------------------------------------------------------


def _check_known(name: str) -> None:
    if name not in settings.MUTT_SECRET_NAMES:
        raise UnknownSecret(name)


def _is_fresh(entry: _Entry) -> bool:
    return time.monotonic() - entry.read_at < settings.SECRET_REFRESH_SECONDS


def _lock_for(name: str) -> threading.Lock:
    lock = _locks.get(name)
    if lock is None:
        with _locks_guard:
            lock = _locks.setdefault(name, threading.Lock())
    return lock


def _forget_on_settings_change(*, setting: str, **kwargs: object) -> None:
    if setting in SECRET_SETTINGS:
        reset_secrets()


def _after_fork_in_child() -> None:
    global _locks_guard
    # A lock held by another thread at the moment of the fork would stay held forever in the child.
    _locks.clear()
    _locks_guard = threading.Lock()


setting_changed.connect(_forget_on_settings_change, dispatch_uid="core.secrets")
os.register_at_fork(after_in_child=_after_fork_in_child)
