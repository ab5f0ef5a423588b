"""Redis connections and key names.

Every key, stream and channel name comes from :func:`key`, which puts the deployment prefix
(``MUTT_REDIS_PREFIX``) in front, so deployments and test runs can share one Redis and names can
later carry hash tags for Redis Cluster.
"""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def key(*parts: str | int) -> str:
    """``key("stream", "ingest")`` -> ``"mutt:stream:ingest"`` (with the configured prefix)."""
    return ":".join([settings.MUTT_REDIS_PREFIX, *(str(part) for part in parts)])


def get_redis() -> redis.Redis:
    """A shared, thread-safe client (its pool) for ``settings.REDIS_URL``."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(
                    url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
                )
                _clients[url] = client
    return client


def reset_clients() -> None:
    """Drop pooled connections (after fork, or when the URL changes)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
