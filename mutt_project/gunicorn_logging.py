"""Gunicorn's logger for MUTT: MUTT's line format, and an access line for every request but accepted ingest.

Format: gunicorn's error and access lines go through the formatter and request-id filter Django's lines
use (``MUTT_LOG_FORMAT``: one JSON object per line, or plain), so the web tier writes one shape of line.
An access line carries the request id the response carries (``X-Request-ID``); a request gunicorn
refused before MUTT saw it (a malformed request line or header) has none and logs ``-``.

Ingest is the one route called thousands of times a second, by machines. A line for each accepted
event would cost the server about a seventh of its single-event throughput (measured with
``make bench``) and bury every other request. Accepted ingest requests are counted in the metrics
instead (``mutt_ingest_*``); a refused one (4xx, 5xx) is still logged, as is every other request.
``MUTT_ACCESS_LOG_INGEST=true`` logs accepted ingest requests too.

A logger must never raise: gunicorn calls ``access`` on its own error path too, with a bare response
built for a request it could not parse, and an exception there would kill the worker before the
client got its 400.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from gunicorn.glogging import Logger

from core.envparse import env_bool, env_str
from core.logging import RequestIdFilter, make_formatter
from ingest import ROUTE_ENDINGS


def status_of(resp: Any) -> int | None:
    """The response's status code: ``status_code`` once the app started the response, else parsed from
    ``status`` (``"400 Bad Request"`` on gunicorn's error path); ``None`` when neither says."""
    code = getattr(resp, "status_code", None)
    if isinstance(code, int):
        return code
    status = getattr(resp, "status", None)
    with contextlib.suppress(ValueError, IndexError, AttributeError):
        return int(str(status).split(None, 1)[0])
    return None


def response_header(resp: Any, name: str) -> str | None:
    """A response header's value (``name`` in lower case); gunicorn keeps them as (name, value) pairs."""
    for key, value in getattr(resp, "headers", None) or ():
        if key.lower() == name:
            return value
    return None


class AccessLogger(Logger):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.log_accepted_ingest = env_bool(os.environ, "MUTT_ACCESS_LOG_INGEST", False)

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = make_formatter(env_str(os.environ, "MUTT_LOG_FORMAT", "json"))
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)
                if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                    handler.addFilter(RequestIdFilter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        try:
            self._access(resp, req, environ, request_time)
        except Exception:  # a log line must never cost a worker or a client its answer
            with contextlib.suppress(Exception):
                self.error_log.exception("Could not write the access line of a request")

    def _access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        status = status_of(resp)
        if (
            not self.log_accepted_ingest
            and status is not None
            and 200 <= status < 300
            and environ.get("PATH_INFO", "").endswith(ROUTE_ENDINGS)
        ):
            return
        if not self.access_log_enabled:
            return
        sent = getattr(resp, "sent", None)
        millis = request_time.seconds * 1000 + request_time.microseconds // 1000
        fields = {
            "request_id": response_header(resp, "x-request-id") or "-",
            "remote": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", "-"),
            # gunicorn's error path builds no PATH_INFO; the parsed request may still know the path.
            "path": environ.get("PATH_INFO") or getattr(req, "path", None) or "-",
            "status": status,
            "bytes": sent,
            "duration_ms": millis,
        }
        request_line = f"{fields['method']} {environ.get('RAW_URI', '-')} {environ.get('SERVER_PROTOCOL', '-')}"
        self.access_log.info(
            '%s "%s" %s %s %sms',
            fields["remote"],
            request_line,
            "-" if status is None else status,
            "-" if sent is None else sent,
            millis,
            extra=fields,
        )
