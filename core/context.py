"""Request-scoped context carried through contextvars: the request id and the audit actor.

The request id is set by ``RequestIdMiddleware`` for HTTP and by ``new_request_id()`` for commands
and workers; logs and history rows read it from here so it need not be threaded through every call.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from core.ids import uuid7_hex

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("mutt_request_id", default="")


def get_request_id() -> str:
    return _request_id.get()


def new_request_id() -> str:
    """32 hex digits, ordered by time (UUID v7): ingest stores it as the correlation id of every event of
    the request, and the audit log indexes it."""
    return uuid7_hex()


@contextlib.contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Run a block under ``request_id`` (a fresh one when omitted) and restore the previous one after."""
    value = request_id or new_request_id()
    token = _request_id.set(value)
    try:
        yield value
    finally:
        _request_id.reset(token)
