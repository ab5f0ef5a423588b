"""Moogsoft, the first destination: its settings, its URL, its credential and its request bodies.

- Settings: ``moog_*`` and ``circuit_breaker_*`` (configcenter/registry.py).
- URL: ``moog_url``; empty, it is the local mock_moog that ``mutt up`` runs in development
  (devtools/mock_moog.py, port ``MUTT_MOCK_MOOG_PORT``). :func:`is_local_mock` tells whether a URL names that
  mock: remediation does not health-check it, and the mock serves only while ``moog_url`` names it.
- Credential: the secret ``MOOG_API_KEY`` (CURRENT, then NEXT), sent as HTTP Basic (webhook) or ``apiKey``
  (Cloud Events API); see :func:`auth_headers`.
- Request bodies: delivery/destinations/moogsoft_events.py (ADR-005).
- Redis: it reads the alert stream the alerter writes, in the ``forwarders`` group, and its keys are those
  it had before destinations existed (``breaker:moog``, ``retry:moog``, ``dlq:moog``, ``delivered:<event
  id>``), so an upgrade keeps the state and idempotency records written before it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from configcenter.runtime import SettingsView
from core import contracts
from core.redis import key
from delivery.destinations import Destination, Request, SecretHeaders, SettingKeys, register
from delivery.destinations.moogsoft_events import MoogFormat, build_request, parse_format

logger = logging.getLogger("mutt.delivery")

MOOG_SECRET = "MOOG_API_KEY"  # noqa: S105 (the secret's name, not a value)
# The Basic-auth user name when MOOG_API_KEY holds only a password (no "user:" part).
DEFAULT_BASIC_USER = "mutt"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Moogsoft(Destination):
    name = contracts.DEFAULT_DESTINATION  # its stream is the alert stream itself
    title = "Moogsoft"
    secret = MOOG_SECRET
    setting_keys = SettingKeys(
        batch_size="moog_batch_size",
        rate_limit="moog_rate_limit",
        rate_period="moog_rate_period",
        timeout="moog_timeout",
        max_retries="moog_max_retries",
        retry_base_delay="moog_retry_base_delay",
        retry_max_delay="moog_retry_max_delay",
        breaker_threshold="circuit_breaker_threshold",
        breaker_timeout="circuit_breaker_timeout",
    )

    def delivered_prefix(self) -> str:
        return key("delivered", "")

    def url(self, settings: SettingsView) -> str:
        configured: str = settings["moog_url"]
        return configured or f"{local_mock_url()}/events"

    def build(self, alerts: Sequence[Mapping[str, Any]], settings: SettingsView) -> Request:
        return build_request(alerts, settings["moog_format"], class_from=settings["moog_class_from"])

    def credential_headers(self, request: Request, secret: str) -> SecretHeaders:
        return auth_headers(request.scheme, secret)


MOOGSOFT = register(Moogsoft())


def auth_headers(fmt: str, secret: str | None = None) -> SecretHeaders:
    """The authentication headers for ``fmt``, from ``secret`` or else ``MOOG_API_KEY`` (CURRENT, then NEXT).

    * ``events_api``: ``apiKey: <key>``, as the Cloud Events API expects.
    * ``webhook``: HTTP Basic, the LAM's ``basic_auth_static`` scheme. ``MOOG_API_KEY`` holds
      ``user:password``, or only a password for the user ``mutt``.

    No credential configured: no headers (the local mock_moog needs none). The forwarder passes the value
    Moogsoft accepted last and, refused with 401/403, re-reads the secret and calls again with the other
    value (delivery/credentials.py). Never log the values; the returned mapping masks them in its repr.
    """
    moog_format = parse_format(fmt)
    if secret is None:
        from core.secrets import get_credential

        credential = get_credential(MOOG_SECRET)
        secret = credential.current or credential.next
    if not secret:
        return SecretHeaders()
    if moog_format == MoogFormat.EVENTS_API:
        return SecretHeaders({"apiKey": secret})
    user, separator, password = secret.partition(":")
    if not separator:
        user, password = DEFAULT_BASIC_USER, secret
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return SecretHeaders({"Authorization": f"Basic {token}"})


# --- the local mock -------------------------------------------------------------------------------


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
