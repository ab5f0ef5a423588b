from __future__ import annotations

from typing import Any

from rest_framework.routers import SimpleRouter


class MuttRouter(SimpleRouter):
    """Routes that answer with or without a trailing slash: a redirect would make clients lose a PUT body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trailing_slash = "/?"
