from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fresh_settings_runtime():
    """Every test starts and ends without a settings snapshot or subscriber thread."""
    from configcenter import runtime

    runtime.reset()
    yield
    runtime.reset()
