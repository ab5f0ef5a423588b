"""System checks of the runtime settings (``check --deploy``; they read the database)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning, register
from django.db import DatabaseError


@register("mutt", deploy=True)
def check_stored_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """mutt.W005: stored values that today's validation refuses, and so are ignored for the default.

    A value an older MUTT accepted (a ``file:`` URL, a URL with a password) stays in the database; every
    process then uses the key's default. The message names the keys and why, never the values.
    """
    from configcenter.mirror import refused_stored_values

    try:
        refused = refused_stored_values()
    except DatabaseError:
        return []  # no database or no table yet: nothing stored to check (readiness reports the database)
    if not refused:
        return []
    listing = "; ".join(f"{key}: {reason}" for key, reason in sorted(refused.items()))
    return [
        Warning(
            f"Stored runtime settings fail validation and are ignored, the default used instead: {listing}.",
            hint="Set each again (admin, Runtime settings; or muttctl config set KEY VALUE --reason ...) "
            "or return it to the default (muttctl config unset KEY).",
            id="mutt.W005",
        )
    ]
