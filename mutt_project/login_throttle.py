"""Login throttling (django-axes): the backend that tolerates non-web logins, and the lockout log line.

Axes records every failed login (``AccessAttempt``, and ``AccessFailureLog`` for ever) and every
successful one (``AccessLog``); the admin lists them under *Axes*. After ``MUTT_LOGIN_FAILURE_LIMIT``
failures of one user name from one client address, that pair is refused with a 429 for
``MUTT_LOGIN_COOLOFF_SECONDS``, the right password included.
"""

from __future__ import annotations

import logging
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from axes.signals import user_locked_out
from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest

logger = logging.getLogger("mutt.auth")


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

    Axes signals again for every refused try during the lockout; those are DEBUG, so an attacker
    hammering the login page does not flood the log (each try is still recorded in the database).
    """
    failures = getattr(request, "axes_failures_since_start", None)
    first = failures is None or failures <= settings.AXES_FAILURE_LIMIT
    cool_off = get_cool_off(request)
    logger.log(
        logging.WARNING if first else logging.DEBUG,
        "login locked out after %s failures: user %r from %s; refused for %s after the last failed try",
        failures if failures is not None else settings.AXES_FAILURE_LIMIT,
        username,
        ip_address,
        f"{int(cool_off.total_seconds())} s" if cool_off else "ever (until reset)",
        extra={"username": username, "client_ip": ip_address},
    )
