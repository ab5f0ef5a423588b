"""Vault access for :mod:`core.secrets`: one authenticated hvac client per process, kept alive.

The client logs in with a token (``VAULT_TOKEN``) or with AppRole (``VAULT_ROLE_ID`` and the secret id
in ``VAULT_SECRET_ID_FILE``, read at every login so a rotated secret id applies). A daemon thread
renews the token at two thirds of its TTL and logs in again with AppRole when renewal is refused or
the token cannot be renewed any further. The client and the thread are created on first use and
created again in a forked child, which inherits neither the parent's thread nor safely its sockets.

Nothing here logs or raises a secret or a token: messages name the secret and the error's type only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    import hvac

logger = logging.getLogger("mutt.secrets.vault")

# Renew when two thirds of the TTL have passed: late enough not to hammer Vault, early enough that a
# slow or failed renewal still leaves a third of the TTL to retry or log in again.
RENEW_AT_FRACTION = 2 / 3
# Bounds of the wait before retrying a failed renewal or login.
MIN_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 30.0


class VaultUnavailable(Exception):
    """Vault did not answer a read (down, unreachable, or it refused our token)."""

    def __init__(self, what: str, error: BaseException | str) -> None:
        self.reason = error if isinstance(error, str) else type(error).__name__
        super().__init__(f"Vault: {what} failed ({self.reason})")


def is_configured() -> bool:
    return bool(settings.VAULT_ADDR)


@dataclass(frozen=True)
class _Config:
    """The VAULT_* settings a client was built from; a change means a new client."""

    addr: str
    auth_method: str
    token: str = field(repr=False)
    role_id: str = field(repr=False)
    secret_id_file: str
    approle_mount: str
    kv_mount: str
    secret_path: str
    namespace: str
    ca_bundle: str
    timeout: int

    @classmethod
    def from_settings(cls) -> _Config:
        return cls(
            addr=settings.VAULT_ADDR,
            auth_method=settings.VAULT_AUTH_METHOD,
            token=settings.VAULT_TOKEN,
            role_id=settings.VAULT_ROLE_ID,
            secret_id_file=settings.VAULT_SECRET_ID_FILE,
            approle_mount=settings.VAULT_APPROLE_MOUNT,
            kv_mount=settings.VAULT_KV_MOUNT,
            secret_path=settings.VAULT_SECRET_PATH,
            namespace=settings.VAULT_NAMESPACE,
            ca_bundle=settings.VAULT_CA_BUNDLE,
            timeout=settings.VAULT_TIMEOUT,
        )

    @property
    def uses_approle(self) -> bool:
        return self.auth_method == "approle"


@dataclass(frozen=True)
class _Lease:
    """How long the current token lives: ``ttl`` seconds from ``obtained`` (monotonic); 0 = no expiry."""

    ttl: float
    renewable: bool
    obtained: float
    # Vault granted less than the previous TTL: the token is reaching its max TTL, so renewing it again
    # would only buy ever shorter extensions.
    capped: bool = False

    @property
    def renew_at(self) -> float | None:
        return None if self.ttl <= 0 else self.obtained + self.ttl * RENEW_AT_FRACTION


class _Session:
    """One authenticated client of this process and the thread that keeps its token alive."""

    def __init__(self, config: _Config) -> None:
        import hvac

        self.config = config
        self.pid = os.getpid()
        # Every argument is explicit so hvac never falls back to VAULT_* environment variables or
        # ~/.vault-token: settings.py is the one reader of the environment.
        self.client: hvac.Client = hvac.Client(
            url=config.addr,
            token="" if config.uses_approle else config.token,
            verify=config.ca_bundle or True,
            timeout=config.timeout,
            namespace=config.namespace or None,
        )
        self.lease: _Lease | None = None
        self.logins = 0
        self.renewals = 0
        self._auth_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at: float | None = None

    # --- authentication ---------------------------------------------------------------------------

    def ensure_authenticated(self) -> None:
        """Log in (AppRole) or look the token up, once; then start the renewal thread."""
        if self.lease is None:
            with self._auth_lock:
                if self.lease is None:
                    self._authenticate()
        if self._thread is None:
            with self._auth_lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._keep_alive, name="mutt-vault-renewal", daemon=True)
                    self._thread.start()

    def relogin_after_refusal(self, refused_lease: _Lease | None) -> bool:
        """After Vault refused the token: log in again with AppRole; False when that is not possible."""
        if not self.config.uses_approle:
            return False
        with self._auth_lock:
            # Another thread may have logged in while this one waited for the lock.
            if self.lease is refused_lease:
                self._authenticate()
        return True

    def _authenticate(self) -> None:
        now = time.monotonic()
        if self.config.uses_approle:
            secret_id = Path(self.config.secret_id_file).read_text().strip()
            response = self.client.auth.approle.login(
                role_id=self.config.role_id, secret_id=secret_id, mount_point=self.config.approle_mount
            )
            auth = response["auth"]
            self.lease = _Lease(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")), now)
            self.logins += 1
            logger.info("logged in to Vault with AppRole (token TTL %ss)", int(self.lease.ttl))
        else:
            data = self.client.auth.token.lookup_self()["data"]
            self.lease = _Lease(float(data.get("ttl") or 0), bool(data.get("renewable")), now)
            logger.info("using the configured Vault token (TTL %ss)", int(self.lease.ttl))
        self._retry_at = None

    # --- renewal thread ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def renewal_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _keep_alive(self) -> None:
        while True:
            if self._stop.wait(self._seconds_until_due()):
                return
            try:
                if not self._renew_or_login():
                    return
            except Exception as exc:
                delay = self._retry_delay()
                self._retry_at = time.monotonic() + delay
                logger.warning("Vault token renewal failed (%s); retrying in %.1fs", type(exc).__name__, delay)

    def _seconds_until_due(self) -> float | None:
        lease = self.lease
        due = self._retry_at or (lease.renew_at if lease is not None else None)
        if due is None:
            return None  # a token without expiry: sleep until stopped
        return max(0.0, due - time.monotonic())

    def _retry_delay(self) -> float:
        ttl = self.lease.ttl if self.lease is not None else 0
        return min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, ttl / 10))

    def _renew_or_login(self) -> bool:
        """One renewal step; False when there is nothing left to do (a token we cannot renew)."""
        import hvac.exceptions

        # Under the auth lock, so a reader logging in again at the same moment cannot have its new
        # token's lease overwritten by the renewal of the old one.
        with self._auth_lock:
            lease = self.lease
            if lease is not None and lease.renewable and not (lease.capped and self.config.uses_approle):
                try:
                    auth = self.client.auth.token.renew_self()["auth"]
                except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as exc:
                    # Revoked, expired or no longer renewable: AppRole gets a new token, a static one cannot.
                    if not self.config.uses_approle:
                        raise
                    logger.info("Vault refused to renew the token (%s); logging in again", type(exc).__name__)
                    self._authenticate()
                    return True
                ttl = float(auth.get("lease_duration") or 0)
                self.lease = _Lease(ttl, bool(auth.get("renewable")), time.monotonic(), capped=ttl < lease.ttl)
                self._retry_at = None
                self.renewals += 1
                logger.debug("Vault token renewed (TTL %ss)", int(ttl))
                return True
            if self.config.uses_approle:
                self._authenticate()
                return True
        logger.warning("the Vault token cannot be renewed; replace VAULT_TOKEN before it expires")
        return False

    # --- reads ------------------------------------------------------------------------------------

    def read_fields(self, path: str) -> dict[str, Any] | None:
        """The data of the latest version of a KV v2 secret, or None when Vault has no such secret."""
        import hvac.exceptions

        for attempt in range(2):
            lease = self.lease
            try:
                response = self.client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.config.kv_mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            except hvac.exceptions.Forbidden:
                # The token expired or was revoked between two renewals: log in again and retry once.
                if attempt == 0 and self.relogin_after_refusal(lease):
                    continue
                raise
            data = (response.get("data") or {}).get("data") or {}
            return data if isinstance(data, dict) else None
        return None


# --- the process's session ------------------------------------------------------------------------

_lock = threading.Lock()
_session: _Session | None = None


def _current_session() -> _Session:
    global _session
    config = _Config.from_settings()
    replaced: _Session | None = None
    with _lock:
        session = _session
        if session is not None and session.pid != os.getpid():
            # A forked child: the renewal thread did not survive the fork and the parent's pooled
            # sockets must not be shared, so this process builds its own client and thread.
            session = None
        elif session is not None and session.config != config:
            replaced, session = session, None
        if session is None:
            session = _Session(config)
            _session = session
    if replaced is not None:
        replaced.stop()
    session.ensure_authenticated()
    return session


def read_fields(name: str) -> dict[str, Any] | None:
    """The fields of secret ``name`` at ``{VAULT_SECRET_PATH}/{name.lower()}``; None when Vault has none.

    Raises :class:`VaultUnavailable` when Vault cannot be asked (down, unreachable, login refused).
    """
    import hvac.exceptions
    import requests

    path = f"{settings.VAULT_SECRET_PATH}/{name.lower()}"
    try:
        return _current_session().read_fields(path)
    except (hvac.exceptions.VaultError, requests.RequestException, OSError, KeyError, ValueError) as exc:
        raise VaultUnavailable(f"reading {name}", exc) from exc


def state() -> dict[str, Any]:
    """What the process's Vault session is doing (for status pages and tests); no token, no secret."""
    session = _session
    if session is None or session.pid != os.getpid():
        return {"configured": is_configured(), "authenticated": False, "renewal_alive": False}
    lease = session.lease
    return {
        "configured": is_configured(),
        "authenticated": lease is not None,
        "auth_method": session.config.auth_method,
        "renewal_alive": session.renewal_alive,
        "token_ttl": lease.ttl if lease else None,
        "logins": session.logins,
        "renewals": session.renewals,
        "pid": session.pid,
    }


def stop() -> None:
    """Stop the renewal thread and forget the client (settings changed, or a test is done)."""
    global _session
    with _lock:
        session, _session = _session, None
    if session is not None and session.pid == os.getpid():
        session.stop()


def _after_fork_in_child() -> None:
    global _lock
    # The parent may have held the lock at the moment of the fork; the child starts with a free one.
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
