"""A small Vault-compatible HTTP server for tests: enough of Vault's API for hvac to work unmodified.

Vault is an edge MUTT does not own, so tests talk to this instead of a real one: a threaded
``http.server`` on 127.0.0.1 (port 0) implementing

- ``POST /v1/auth/{mount}/login``            AppRole login (role id + secret id -> token)
- ``GET  /v1/auth/token/lookup-self``        the token's remaining TTL and renewability
- ``POST /v1/auth/token/renew-self``         extends the token by its TTL (capped by its max TTL)
- ``GET  /v1/{mount}/data/{path}``           KV v2 read of the latest version

with Vault's JSON shapes and status codes (403 for a bad token, 404 for a missing secret, 503 while
sealed). Tests change secrets, revoke tokens, make every request fail, and read the request log.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Token:
    ttl: float  # seconds granted at issue or renewal; 0 = never expires
    renewable: bool
    max_ttl: float  # total lifetime cap from issue; 0 = none
    issued_at: float = field(default_factory=time.monotonic)
    expires_at: float | None = None
    revoked: bool = False
    renewals: list[float] = field(default_factory=list)  # monotonic times of successful renewals

    def __post_init__(self) -> None:
        self.expires_at = self._expiry(self.ttl)

    def _expiry(self, ttl: float) -> float | None:
        if ttl <= 0:
            return None
        expiry = time.monotonic() + ttl
        if self.max_ttl > 0:
            expiry = min(expiry, self.issued_at + self.max_ttl)
        return expiry

    @property
    def valid(self) -> bool:
        return not self.revoked and (self.expires_at is None or time.monotonic() < self.expires_at)

    def remaining(self) -> int:
        # Vault reports whole seconds; rounding up keeps a short test TTL from reading as "no expiry".
        if self.expires_at is None:
            return 0
        return max(1, int(self.expires_at - time.monotonic() + 0.999))

    def renew(self) -> None:
        self.expires_at = self._expiry(self.ttl)
        self.renewals.append(time.monotonic())


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic()
    method: str
    path: str
    token: str | None
    namespace: str | None
    status: int


class FakeVault:
    """Start with ``with FakeVault() as vault:`` (or ``start()`` / ``stop()``); ``vault.url`` is VAULT_ADDR."""

    def __init__(self, *, approle_mount: str = "approle") -> None:
        self.approle_mount = approle_mount
        self.tokens: dict[str, Token] = {}
        self.approles: dict[str, tuple[str, float, bool, float]] = {}  # role id -> secret id, ttl, renewable, max
        self.kv: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (mount, path) -> versions
        self.calls: list[Call] = []
        self.failing = False  # answer 503 ("Vault is sealed") to everything
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> FakeVault:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-vault", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down; its port then refuses connections (Vault unreachable)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeVault:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- what tests control ---------------------------------------------------------------------------

    def issue_token(self, *, ttl: float = 0, renewable: bool = True, max_ttl: float = 0) -> str:
        token = f"hvs.{secrets.token_urlsafe(18)}"
        with self.lock:
            self.tokens[token] = Token(ttl=ttl, renewable=renewable, max_ttl=max_ttl)
        return token

    def add_approle(
        self, role_id: str, secret_id: str, *, ttl: float = 0, renewable: bool = True, max_ttl: float = 0
    ) -> None:
        with self.lock:
            self.approles[role_id] = (secret_id, ttl, renewable, max_ttl)

    def put_secret(self, path: str, data: dict[str, str], *, mount: str = "secret") -> None:
        with self.lock:
            self.kv.setdefault((mount, path), []).append(dict(data))

    def delete_secret(self, path: str, *, mount: str = "secret") -> None:
        with self.lock:
            self.kv.pop((mount, path), None)

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens[token].revoked = True

    def revoke_all(self) -> None:
        with self.lock:
            for token in self.tokens.values():
                token.revoked = True

    def calls_to(self, path_part: str, *, status: int | None = None) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if path_part in call.path and (status is None or call.status == status)]

    def tokens_issued_by_login(self) -> list[str]:
        with self.lock:
            return [token for token in self.tokens if token.startswith("hvs.login.")]

    # --- request handling (called from the handler threads) ---------------------------------------------

    def handle(self, method: str, path: str, token: str | None, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.failing:
            return 503, {"errors": ["Vault is sealed"]}
        if method == "POST" and path == f"/v1/auth/{self.approle_mount}/login":
            return self._login(body)
        if path == "/v1/auth/token/lookup-self" and method == "GET":
            return self._with_token(token, self._lookup_self)
        if path == "/v1/auth/token/renew-self" and method == "POST":
            return self._with_token(token, self._renew_self)
        mount, marker, secret_path = path.removeprefix("/v1/").partition("/data/")
        if method == "GET" and marker:
            return self._with_token(token, lambda found: self._read(mount, secret_path))
        return 404, {"errors": []}

    def _with_token(self, token: str | None, answer: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            found = self.tokens.get(token or "")
            if found is None or not found.valid:
                return 403, {"errors": ["permission denied"]}
            return answer(found)

    def _login(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            role = self.approles.get(str(body.get("role_id")))
            if role is None or role[0] != body.get("secret_id"):
                return 400, {"errors": ["invalid role or secret ID"]}
            _, ttl, renewable, max_ttl = role
            token = f"hvs.login.{secrets.token_urlsafe(18)}"
            self.tokens[token] = Token(ttl=ttl, renewable=renewable, max_ttl=max_ttl)
        auth = {"client_token": token, "policies": ["mutt"], "lease_duration": int(ttl), "renewable": renewable}
        return 200, {"auth": auth, "data": None}

    @staticmethod
    def _lookup_self(token: Token) -> tuple[int, dict[str, Any]]:
        return 200, {"data": {"ttl": token.remaining(), "renewable": token.renewable, "policies": ["mutt"]}}

    @staticmethod
    def _renew_self(token: Token) -> tuple[int, dict[str, Any]]:
        if not token.renewable:
            return 400, {"errors": ["lease is not renewable"]}
        token.renew()
        auth = {"lease_duration": token.remaining(), "renewable": token.renewable, "policies": ["mutt"]}
        return 200, {"auth": auth}

    def _read(self, mount: str, path: str) -> tuple[int, dict[str, Any]]:
        versions = self.kv.get((mount, path))
        if not versions:
            return 404, {"errors": []}
        metadata = {"version": len(versions), "deletion_time": "", "destroyed": False}
        return 200, {"data": {"data": dict(versions[-1]), "metadata": metadata}}


def _handler_for(vault: FakeVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so after stop() no kept-alive connection still answers.

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_PUT(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            path = self.path.split("?", 1)[0]
            token = self.headers.get("X-Vault-Token")
            status, payload = vault.handle(method, path, token, body)
            with vault.lock:
                vault.calls.append(
                    Call(time.monotonic(), method, path, token, self.headers.get("X-Vault-Namespace"), status)
                )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean

    return Handler
