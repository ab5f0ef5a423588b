"""Login throttling (django-axes): the client address, the two limits, the backend that tolerates non-web
logins, and the lockout log line.

Axes records every failed login (``AccessAttempt``, and ``AccessFailureLog`` for ever) and every
successful one (``AccessLog``); the admin lists them under *Axes*. After ``MUTT_LOGIN_FAILURE_LIMIT``
failures of one user name from one client address, that pair is refused with a 429 for
``MUTT_LOGIN_COOLOFF_SECONDS``, the right password included; after ``MUTT_LOGIN_USERNAME_FAILURE_LIMIT``
failures of the user name from all addresses together, the user name is refused from everywhere.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.db.models import Sum
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

logger = logging.getLogger("mutt.auth")


def client_address(request: HttpRequest) -> str | None:
    """The address a login came from (``AXES_CLIENT_IP_CALLABLE``).

    The peer's address, unless ``MUTT_TRUSTED_PROXY_COUNT`` proxies stand in front: each appends the address
    it was reached from to X-Forwarded-For, so the client is that many entries from the right. Entries
    further left are the client's own to invent and are never read. A missing or malformed entry falls
    back to the peer, so a broken proxy setup throttles too much rather than not at all.
    """
    peer = request.META.get("REMOTE_ADDR")
    count = settings.MUTT_TRUSTED_PROXY_COUNT
    if count <= 0:
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < count:
        return peer
    try:
        return str(ipaddress.ip_address(hops[-count]))
    except ValueError:
        return peer


def failure_limit(request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
    """The limit axes compares a user name and address's failures with (``AXES_FAILURE_LIMIT``).

    ``MUTT_LOGIN_FAILURE_LIMIT``, or 0 (refused whatever the pair's own count) once the user name's
    failures from all addresses within the cool-off reach ``MUTT_LOGIN_USERNAME_FAILURE_LIMIT``. Axes has
    one limit for all its lockout parameters, hence the second one here.
    """
    username_limit = settings.MUTT_LOGIN_USERNAME_FAILURE_LIMIT
    username = get_client_username(request, credentials)
    if username_limit and username:
        since = timezone.now() - (get_cool_off(request) or settings.AXES_COOLOFF_TIME)
        failures = AccessAttempt.objects.filter(username=username, attempt_time__gt=since).aggregate(
            n=Sum("failures_since_start")
        )["n"]
        if (failures or 0) >= username_limit:
            request.mutt_username_locked_out = True  # type: ignore[attr-defined]  # for the lockout page
            return 0
    return settings.MUTT_LOGIN_FAILURE_LIMIT


class ThrottledLoginBackend(AxesStandaloneBackend):
    """Axes' lockout check for web logins; a login without a request (a management command, a script)
    has no client address to throttle, so it goes on to the model backend instead of raising."""

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


@receiver(user_locked_out)
def log_lockout(sender: Any, request: HttpRequest | None = None, username: str | None = None,
                ip_address: str | None = None, **kwargs: Any) -> None:  # fmt: skip
    """One WARNING when a user and address get locked out, never with the password.

    Axes signals again for every refused try during the lockout, without counting it (so the cool-off
    is not extended); those are DEBUG, so an attacker hammering the login page does not flood the log.
    Only the try that reaches a limit has its failure count on the request.
    """
    failures = getattr(request, "axes_failures_since_start", None)
    by_username = getattr(request, "mutt_username_locked_out", False)
    cool_off = get_cool_off(request)
    logger.log(
        logging.WARNING if failures is not None else logging.DEBUG,
        "login locked out after %s: user %r from %s; refused for %s after the last failed try",
        "too many failures from all addresses together" if by_username else f"{failures} failures",
        username,
        ip_address,
        f"{int(cool_off.total_seconds())} s" if cool_off else "ever (until reset)",
        extra={"username": username, "client_ip": ip_address},
    )
