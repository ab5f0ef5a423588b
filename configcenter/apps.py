from __future__ import annotations

from django.apps import AppConfig


class ConfigCenterConfig(AppConfig):
    name = "configcenter"
    verbose_name = "Configuration center"
    default_auto_field = "django.db.models.BigAutoField"
