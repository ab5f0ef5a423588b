"""A destination's credential in the forwarder's requests: the headers reused for a second, the other value
tried when the destination refuses one.

The credential is a secret of core.secrets with a CURRENT and a NEXT value (rotation without downtime). The
value the destination accepted last in this process is tried first (core.rotation). Refused with 401 or 403,
the forwarder reads the secret again and sends the request once more with its other value (NEXT during a
rotation, or a value rotated in meanwhile); when the destination takes it, this process uses that value from
now on. No value is ever logged, only that one was refused or accepted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.rotation import ordered_values, remember_accepted
from core.secrets import refresh_secrets
from delivery.destinations import Destination, Request, SecretHeaders
from delivery.outcomes import AUTH_STATUSES, Result

logger = logging.getLogger("mutt.forwarder")

HEADERS_SECONDS = 1.0  # how long the request headers (with the credential) are reused

Post = Callable[[bytes, SecretHeaders], Result]


class CredentialHeaders:
    """One forwarder's request headers for its destination. One thread uses an instance at a time."""

    def __init__(self, destination: Destination) -> None:
        self._secret = destination.secret
        self._title = destination.title
        self._headers_for = destination.credential_headers  # bound once
        # (valid until, (scheme, content headers), headers, the credential value they carry)
        self._cache: tuple[float, tuple[str, dict[str, str]], SecretHeaders, str] | None = None

    def headers(self, request: Request) -> SecretHeaders:
        """Credential and content headers, the same mapping for up to a second: the credential is looked up
        (and its headers built) once a second rather than for every request, and the transport encodes an
        unchanged mapping only once. A rotated credential is in use within that second."""
        now = time.monotonic()
        cached = self._cache
        wanted = (request.scheme, request.headers)
        if cached is None or now >= cached[0] or cached[1] != wanted:
            values = ordered_values(self._secret) if self._secret is not None else []
            secret = values[0] if values else ""
            headers = self._with_content(request, secret)  # a masking mapping: its repr never shows the value
            self._cache = cached = (now + HEADERS_SECONDS, wanted, headers, secret)
        return cached[2]

    def send_with_other_value(self, request: Request, refused: Result, post: Post) -> Result:
        """After ``refused`` (401/403): read the secret again and ``post`` once more with its other value.
        When there is none, or the destination refuses that one too, the refusal stands."""
        if self._secret is None:
            return refused
        rejected = self._cache[3] if self._cache is not None else ""
        refresh_secrets(self._secret)
        self._cache = None
        others = [value for value in ordered_values(self._secret) if value != rejected]
        if not others:
            logger.warning(
                "%s refused the credential and %s has no other value; holding alerts", self._title, self._secret,
                extra={"status": refused.status},
            )  # fmt: skip
            return refused
        result = post(request.body, self._with_content(request, others[0]))
        if result.status in AUTH_STATUSES:
            logger.warning(
                "%s refused both values of %s; holding alerts", self._title, self._secret,
                extra={"status": result.status},
            )  # fmt: skip
        elif result.outcome == "delivered":
            remember_accepted(self._secret, others[0])
            logger.warning("%s refused one value of %s, accepted the other; using that one", self._title, self._secret)
        return result

    def _with_content(self, request: Request, secret: str) -> SecretHeaders:
        headers = self._headers_for(request, secret)
        headers.update(request.headers)
        return headers
