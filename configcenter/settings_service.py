"""Changing runtime settings: validate, store with history, then tell every process (after commit)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from configcenter import mirror
from configcenter.models import DynamicSetting
from configcenter.registry import REGISTRY, InvalidSettingValue, get_definition, relations_for
from core.audit import Actor, audited
from core.history import Entry, trail, with_previous

logger = logging.getLogger("mutt.config")


def stored_overrides() -> dict[str, Any]:
    """Overridden values from the database, checked against the registry (unknown keys skipped)."""
    return {k: value for k, (value, _) in mirror.database_state().items() if value is not None}


def publish_overrides(overrides: dict[str, Any]) -> None:
    """Make Redis's copy exactly ``overrides`` (tests and emergencies: no versions, no validation)."""
    mirror.replace(overrides)


def _publish_after_commit(changed: str) -> None:
    # The database holds the change already. If Redis is unreachable now, the subscriber's periodic
    # reconciliation republishes it, so every process converges without anyone repeating the change.
    try:
        mirror.publish(changed)
    except Exception:
        logger.warning("could not publish the change of %s; reconciliation will", changed, exc_info=True)


def describe(setting_key: str | None = None) -> list[dict[str, Any]]:
    """Each registered setting (or one) with stored value, default, type, bounds, component, last change."""
    keys = [get_definition(setting_key).key] if setting_key else sorted(REGISTRY)
    rows = {r.key: r for r in DynamicSetting.objects.filter(key__in=keys)}
    described = []
    for name in keys:
        definition = REGISTRY[name]
        row = rows.get(name)
        stored = row.value if row is not None else None
        overridden = stored is not None
        described.append(
            {
                "key": name,
                "value": definition.effective(stored),
                "default": definition.default,
                "is_default": not overridden,
                "type": definition.type.value,
                "bounds": definition.describe_bounds(),
                "minimum": definition.minimum,
                "maximum": definition.maximum,
                "choices": list(definition.choices),
                "unit": definition.unit,
                "component": definition.component,
                "description": definition.description,
                "updated_at": row.updated_at if row else None,
            }
        )
    return described


def history(setting_key: str, limit: int | None = None) -> list[Entry]:
    """A key's changes, newest first (at most ``limit``), each with the row before it (old and new value)."""
    get_definition(setting_key)
    return with_previous(trail(DynamicSetting.history.filter(key=setting_key))[:limit])


def check_relations(setting_key: str, new_value: Any) -> None:
    effective = {k: d.default for k, d in REGISTRY.items()} | stored_overrides() | {setting_key: new_value}
    for relation in relations_for(setting_key):
        low, high = effective[relation.lower], effective[relation.upper]
        if not relation.holds(low, high):
            sign = "<" if relation.strict else "≤"
            raise InvalidSettingValue(
                setting_key,
                f"{relation.lower} ({low}) must be {sign} {relation.upper} ({high}): {relation.why}",
            )


def _save(setting_key: str, value: Any, *, actor: Actor, reason: str) -> DynamicSetting:
    """Store ``value`` (None: the default) after checking relations with the related keys locked, so two
    concurrent changes cannot together break a relation."""
    related = {setting_key} | {name for r in relations_for(setting_key) for name in (r.lower, r.upper)}
    with transaction.atomic(), audited(actor, reason):
        # Lock in a fixed order so concurrent changes of related keys cannot deadlock.
        list(DynamicSetting.objects.select_for_update().filter(key__in=sorted(related)).order_by("key"))
        check_relations(setting_key, get_definition(setting_key).effective(value))
        row, _ = DynamicSetting.objects.select_for_update().get_or_create(key=setting_key)
        if row.value != value:
            row.value = value
            row.save()
        transaction.on_commit(lambda: _publish_after_commit(setting_key))
    return row


def set_setting(setting_key: str, raw_value: Any, *, actor: Actor, reason: str = "") -> DynamicSetting:
    """Validate ``raw_value`` (text or JSON) against the key's type, bounds and relations, and store it."""
    definition = get_definition(setting_key)
    value = definition.parse(raw_value)
    return _save(setting_key, value, actor=actor, reason=reason)


def unset_setting(setting_key: str, *, actor: Actor, reason: str = "") -> DynamicSetting:
    """Return the key to its registry default."""
    get_definition(setting_key)
    return _save(setting_key, None, actor=actor, reason=reason)


def sync_registry(actor: Actor | None = None) -> int:
    """Create a row (value = default) for every registered key that has none; returns how many."""
    existing = set(DynamicSetting.objects.values_list("key", flat=True))
    missing = [k for k in REGISTRY if k not in existing]
    with transaction.atomic(), audited(actor or Actor.system("registry"), "setting registered"):
        for setting_key in missing:
            DynamicSetting.objects.create(key=setting_key, value=None)
    return len(missing)
