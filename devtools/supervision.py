"""Whether ``mutt up`` runs mock_moog: only in development, while alerts go to the local mock.

The mock stands in for Moogsoft while ``moog_url`` is empty or names it (delivery/destinations/moogsoft.py
says which URLs do); with a real Moogsoft configured there is nothing for it to do.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from delivery.destinations.moogsoft import configured_moog_url, is_local_mock

FOLLOW_FLAG = "--follow-moog-url"


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
