from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def apply_setting(key: str, value: object, *, reason: str = "test") -> None:
    """Change a runtime setting and wait until this process reads the new value (changes apply async)."""
    from configcenter.registry import get_definition
    from configcenter.runtime import get_setting
    from configcenter.settings_service import set_setting
    from core.audit import Actor

    set_setting(key, value, actor=Actor.cli("test"), reason=reason)
    expected = get_definition(key).parse(value)
    if not wait_for(lambda: get_setting(key) == expected, timeout=5):
        raise AssertionError(f"{key} did not become {expected!r} in this process")
