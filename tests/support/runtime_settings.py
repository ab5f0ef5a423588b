"""Changing runtime settings in a test as an operator would: through the service, read at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.audit import Actor


@contextmanager
def changing_settings(capture_on_commit: Any, actor: Actor, reason: str) -> Iterator[Callable[..., None]]:
    """Yields ``change(name=value, ...)``; the defaults are back on leaving, if anything was changed.

    ``capture_on_commit`` is pytest-django's ``django_capture_on_commit_callbacks``: the change notice
    is sent on commit, which a test's transaction never reaches on its own."""
    from configcenter import runtime, settings_service

    changed = False

    def change(**values: Any) -> None:
        nonlocal changed
        changed = True
        with capture_on_commit(execute=True):
            for name, value in values.items():
                settings_service.set_setting(name, value, actor=actor, reason=reason)
        runtime.reload()

    yield change
    if changed:
        settings_service.publish_overrides({})
        runtime.reload()
