"""Opening connections with a credential that may be mid-rotation: try CURRENT, then NEXT.

During a rotation the server accepts the old or the new password, depending on how far the operator
has got. A connection factory passes :func:`connect_with_credential` a function that opens one
connection with a given password; this module tries the credential's values until the server accepts
one. It remembers, per process, which value was accepted last, so later connections try that one
first and a rotation costs one rejected attempt per process rather than one per connection; and when
the server rejects a value it re-reads the secret, so a value just rotated in Vault or in a file is
used without a restart.

Only names and positions ("current", "next") are logged, never a value.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from django.core.signals import setting_changed

from core.secrets import SECRET_SETTINGS, Credential, fingerprint, get_credential, refresh_secrets

logger = logging.getLogger("mutt.secrets.rotation")

T = TypeVar("T")

# Credential name -> fingerprint of the value a server accepted last in this process.
_accepted: dict[str, str] = {}
_accepted_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Another thread may hold the lock at the moment of a fork (it is taken on every authentication);
    # the child would inherit it locked, with nobody to release it.
    global _accepted_lock
    _accepted_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def connect_with_credential(
    name: str, connect: Callable[[str | None], T], *, is_rejection: Callable[[BaseException], bool]
) -> T:
    """Return ``connect(password)`` for the first of the credential's values the server accepts.

    ``connect(None)`` is called once when the credential has no value at all: the caller then uses
    the password it is configured with (the one in its URL). ``is_rejection`` says whether an error
    means "wrong password"; any other error is raised at once. After the first rejection the secret is
    read again, and values not tried yet (a value rotated meanwhile included) are tried; when none is
    accepted, the last rejection is raised.
    """
    credential = get_credential(name)
    if not credential.candidates():
        return connect(None)
    tried: set[str] = set()
    refreshed = False
    rejections: list[BaseException] = []
    while True:
        pending = [value for value in _accepted_first(name, credential) if value not in tried]
        if not pending:
            break
        value = pending[0]
        tried.add(value)
        try:
            result = connect(value)
        except Exception as exc:
            if not is_rejection(exc):
                raise
            rejections.append(exc)
            logger.warning("the server rejected the %s value of %s", _position(credential, value), name)
            if not refreshed:
                # The rejected value may be one an operator already replaced: read the secret again.
                refreshed = True
                refresh_secrets(name)
                credential = get_credential(name)
            continue
        _remember(name, credential, value)
        return result
    # At least one value was tried (the credential had candidates), so there is a rejection to raise.
    raise rejections[-1]


def ordered_values(name: str) -> list[str]:
    """The credential's values to try, the one a server accepted last in this process first.

    For callers that authenticate per request rather than per connection (the forwarder's HTTP calls)."""
    return _accepted_first(name, get_credential(name))


def remember_accepted(name: str, value: str) -> None:
    """Record that a server accepted ``value`` of ``name``: this process tries it first from now on."""
    _remember(name, get_credential(name), value)


def forget_accepted() -> None:
    """Forget which values servers accepted (settings changed, or a test starts afresh)."""
    with _accepted_lock:
        _accepted.clear()


def _accepted_first(name: str, credential: Credential) -> list[str]:
    values = credential.candidates()
    accepted = _accepted.get(name)
    return sorted(values, key=lambda value: fingerprint(value) != accepted)


def _remember(name: str, credential: Credential, value: str) -> None:
    mark = fingerprint(value)
    with _accepted_lock:
        changed = _accepted.get(name) != mark
        _accepted[name] = mark
    if changed:
        logger.info("authenticated with the %s value of %s", _position(credential, value), name)


def _position(credential: Credential, value: str) -> str:
    if value == credential.current:
        return "current"
    if value == credential.next:
        return "next"
    return "previous"


def _forget_on_settings_change(*, setting: str, **kwargs: object) -> None:
    if setting in SECRET_SETTINGS:
        forget_accepted()


setting_changed.connect(_forget_on_settings_change, dispatch_uid="core.rotation")
