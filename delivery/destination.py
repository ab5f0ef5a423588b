"""Whether alerts go to a real Moogsoft or to the local mock_moog, and so whether ``mutt up`` runs the mock."""

from __future__ import annotations

import logging
from pathlib import Path
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


def mock_moog_args() -> list[str] | None:
    """How ``mutt up`` runs mock_moog: ``[]`` serve, ``[FOLLOW_FLAG]`` decide later, None not at all.

    ``mutt up`` asks before it starts the embedded services; reading a setting then would only log a
    connection failure and return the default. So while they are down the mock is started in follow
    mode: it reads ``moog_url`` once the services are up and serves only while no real Moogsoft is
    configured. With the services reachable the answer is final: no mock for a real Moogsoft URL, and
    the mock when the URL is empty, local, or cannot be read.
    """
    from mutt_project import embedded

    data_dir = Path(settings.MUTT_DATA_DIR)
    if (settings.MUTT_EMBEDDED_REDIS and not embedded.redis_running(data_dir)) or (
        settings.MUTT_EMBEDDED_POSTGRES and not embedded.postgres_running(data_dir)
    ):
        return [FOLLOW_FLAG]
    from configcenter import runtime

    try:
        moog_url = configured_moog_url()
    finally:
        # One read is all the supervisor needs: no settings subscriber kept running in it.
        runtime.reset(wait=False)
    return [] if moog_url is None or is_local_mock(moog_url) else None
