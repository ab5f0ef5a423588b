"""Every change to rules, development hosts and device teams goes through these functions.

Each takes an explicit actor and an optional reason, validates with the model's ``full_clean()``,
writes in one transaction (so the history rows commit with the change) and, only after commit,
announces the change so running alerters rebuild their compiled snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models, transaction

from core import contracts
from core.audit import Actor, audited
from core.redis import get_redis, key
from rules.models import AlertRule, DevHost, DeviceTeam

logger = logging.getLogger("mutt.rules")

M = TypeVar("M", bound=models.Model)

# Fields a caller may not set: identity and bookkeeping.
_PROTECTED_FIELDS = frozenset({"id", "created_at", "updated_at"})


def rules_channel() -> str:
    """The pub/sub channel on which a change to rules, hosts or teams is announced."""
    return key(contracts.RULES_CHANNEL)


def _announce_change(kind: str) -> None:
    # Runs after commit. A failed publish must not undo a committed change: alerters also reload
    # on a timer, so the change still applies, only later.
    try:
        get_redis().publish(rules_channel(), kind)
    except Exception:
        logger.warning(
            "could not announce a %s change; alerters pick it up on their periodic reload",
            kind,
            exc_info=True,
        )


def _apply(instance: M, changes: dict[str, Any]) -> None:
    editable = {f.name for f in instance._meta.concrete_fields} - _PROTECTED_FIELDS
    unknown = sorted(set(changes) - editable)
    if unknown:
        raise ValidationError({name: f"{name!r} is not a field of {instance._meta.verbose_name}." for name in unknown})
    for name, value in changes.items():
        setattr(instance, name, value)


_KINDS: dict[type[models.Model], str] = {AlertRule: "rule", DevHost: "devhost", DeviceTeam: "deviceteam"}


def create(model: type[M], *, actor: Actor, reason: str = "", **fields: Any) -> M:
    """Create a rule, development host or device team from field values."""
    instance = model()
    _apply(instance, fields)
    return save(instance, actor=actor, reason=reason)


def update(instance: M, *, actor: Actor, changes: dict[str, Any], reason: str = "") -> M:
    _apply(instance, changes)
    return save(instance, actor=actor, reason=reason)


def save(instance: M, *, actor: Actor, reason: str = "") -> M:
    """Validate and save a populated rule, host or team (the admin's and the API's path)."""
    instance.full_clean()
    with transaction.atomic(), audited(actor, reason):
        instance.save()
        transaction.on_commit(lambda: _announce_change(_KINDS[type(instance)]))
    return instance


def delete(instance: models.Model, *, actor: Actor, reason: str = "") -> None:
    with transaction.atomic(), audited(actor, reason):
        instance.delete()
        transaction.on_commit(lambda: _announce_change(_KINDS[type(instance)]))


def set_rules_active(*, actor: Actor, rules: Iterable[AlertRule], active: bool, reason: str = "") -> int:
    """Activate or deactivate many rules; one history row per rule that actually changes."""
    changed = 0
    with transaction.atomic(), audited(actor, reason):
        for rule in rules:
            if rule.is_active != active:
                rule.is_active = active
                rule.save(update_fields=["is_active", "updated_at"])
                changed += 1
        if changed:
            transaction.on_commit(lambda: _announce_change("rule"))
    return changed


def delete_many(*, actor: Actor, objects: Iterable[models.Model], reason: str = "") -> int:
    """Delete rules, hosts or teams one by one, so each deletion has its own history row."""
    deleted = 0
    with transaction.atomic(), audited(actor, reason):
        for obj in objects:
            obj.delete()
            deleted += 1
        if deleted:
            transaction.on_commit(lambda: _announce_change("bulk"))
    return deleted
