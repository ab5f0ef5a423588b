"""Who changed what, and why: the actor model shared by every service function.

Service functions take an explicit :class:`Actor` and run their writes inside :func:`audited`. The
history rows django-simple-history writes during that block are stamped, through the
``pre_create_historical_record`` signal, with the actor's label and user, the reason and the
request id. A history row written outside such a block is refused, so a state change cannot bypass
the service layer unnoticed.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from django.db import models
from django.db.models.signals import pre_delete, pre_save
from simple_history.models import HistoricalChanges
from simple_history.signals import pre_create_historical_record

from core.context import get_request_id

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


# The longest reason a person may give. Forms and API fields refuse longer text; a reason sent in a
# header or a delete page's field is cut to it.
REASON_MAX_LENGTH = 500


def clip_reason(text: str) -> str:
    return text.strip()[:REASON_MAX_LENGTH]


class AuditContextMissing(RuntimeError):
    """An audited model was saved outside a service function (no actor)."""


@dataclass(frozen=True)
class Actor:
    """The person or process behind a change. ``label`` is what history shows (``user:alice``)."""

    label: str
    user: Any = None  # a django.contrib.auth user when a person acts, else None
    api_key_id: int | None = None

    @classmethod
    def for_user(cls, user: AbstractBaseUser | AnonymousUser) -> Actor:
        if not user.is_authenticated:
            raise ValueError("an anonymous request cannot change audited data")
        return cls(label=f"user:{user.get_username()}", user=user)

    @classmethod
    def for_api_key(cls, api_key: Any) -> Actor:
        return cls(label=f"apikey:{api_key.name}", user=api_key.owner, api_key_id=api_key.pk)

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(label=f"system:{component}")

    @classmethod
    def cli(cls, name: str | None = None) -> Actor:
        return cls(label=f"cli:{name or getpass.getuser()}")

    def __str__(self) -> str:
        return self.label


@runtime_checkable
class ActingCredential(Protocol):
    """A credential that acts on its own account (an API key), as an authentication class leaves it in
    ``request.auth``: it names its own :class:`Actor`. The API base asks for that through this protocol
    rather than importing the app model behind it, since core imports no app (ADR-010)."""

    def as_actor(self) -> Actor: ...


@dataclass(frozen=True)
class _AuditScope:
    actor: Actor
    reason: str


_scope: contextvars.ContextVar[_AuditScope | None] = contextvars.ContextVar("mutt_audit_scope", default=None)


@contextlib.contextmanager
def audited(actor: Actor, reason: str = "") -> Iterator[None]:
    """Attribute every history row written in this block to ``actor`` with ``reason``."""
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be an Actor, not {type(actor).__name__}")
    token = _scope.set(_AuditScope(actor=actor, reason=reason.strip()))
    try:
        yield
    finally:
        _scope.reset(token)


def current_actor() -> Actor | None:
    scope = _scope.get()
    return scope.actor if scope else None


class AuditedHistory(models.Model):
    """Extra columns on every history table: the actor label and the request id."""

    history_actor = models.CharField(max_length=200, help_text="Who made the change (user:, apikey:, cli:, system:).")
    history_request_id = models.CharField(max_length=128, blank=True, db_index=True)

    class Meta:
        abstract = True


def _require_scope(model: type) -> _AuditScope:
    scope = _scope.get()
    if scope is None:
        raise AuditContextMissing(
            f"{model.__name__} changed outside a service function; call the app's services module with an actor"
        )
    return scope


def _is_audited(model: type) -> bool:
    # Models with django-simple-history carry a `history` descriptor; history rows themselves do not count.
    return hasattr(model, "history") and not issubclass(model, HistoricalChanges)


def _guard_write(sender: type, **kwargs: Any) -> None:
    """Refuse the write itself (before any SQL), not only its history row, when no actor is in scope."""
    if kwargs.get("raw") or not _is_audited(sender):
        return  # fixtures loaded with loaddata are raw saves
    _require_scope(sender)


def _stamp_history(sender: type, history_instance: Any, **kwargs: Any) -> None:
    scope = _require_scope(history_instance.instance_type)
    history_instance.history_actor = scope.actor.label
    history_instance.history_user = scope.actor.user
    history_instance.history_change_reason = scope.reason
    history_instance.history_request_id = get_request_id()


pre_create_historical_record.connect(_stamp_history, dispatch_uid="mutt_audit_stamp_history")
pre_save.connect(_guard_write, dispatch_uid="mutt_audit_guard_save")
pre_delete.connect(_guard_write, dispatch_uid="mutt_audit_guard_delete")
