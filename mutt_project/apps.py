from __future__ import annotations

from django.apps import AppConfig


class MuttProjectConfig(AppConfig):
    name = "mutt_project"
    verbose_name = "MUTT platform"

    def ready(self) -> None:
        from mutt_project import audit, checks  # noqa: F401  (registers checks and the history signal)
