from __future__ import annotations

from django.apps import AppConfig


class ConfigCenterConfig(AppConfig):
    name = "configcenter"
    verbose_name = "Configuration center"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from configcenter import checks  # noqa: F401  (registers the stored-settings check)

        post_migrate.connect(_sync_registry, sender=self, dispatch_uid="configcenter_sync_registry")


def _sync_registry(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    """Give every registered runtime setting a row, so the admin lists them all."""
    from configcenter.settings_service import sync_registry

    sync_registry()
