from __future__ import annotations

from django.apps import AppConfig


class MuttProjectConfig(AppConfig):
    name = "mutt_project"
    verbose_name = "MUTT platform"

    def ready(self) -> None:
        # Registers the checks, the history signal and the lockout log line.
        from mutt_project import checks, login_throttle  # noqa: F401
