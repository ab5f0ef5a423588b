"""Whether alerts go to a real Moogsoft or to the local mock_moog, and so whether ``mutt up`` runs the mock."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger("mutt.delivery")

FOLLOW_FLAG = "--follow-moog-url"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def local_mock_url() -> str:
    return f"http://127.0.0.1:{settings.MUTT_MOCK_MOOG_PORT}"


def is_local_mock(moog_url: str) -> bool:
    """True when ``moog_url`` is empty or names the local mock's port on this machine."""
    if not moog_url.strip():
        return True
    try:
        parts = urlsplit(moog_url.strip())
        port = parts.port
    except ValueError:
        return False
    return parts.hostname in _LOOPBACK and port == settings.MUTT_MOCK_MOOG_PORT


def configured_moog_url() -> str | None:
    """The ``moog_url`` setting now, or None when it cannot be read (fresh database, outage)."""
    from configcenter.runtime import get_setting

    try:
        return str(get_setting("moog_url"))
    except Exception as exc:  # a database without tables yet, or nothing answering: let the caller decide
        logger.debug("moog_url could not be read (%s)", type(exc).__name__)
        return None
