"""Log lines in one format (JSON or plain) with the request id of the work in hand.

Django's loggers (settings.LOGGING) and gunicorn's (``mutt_project.gunicorn_logging``) share the
formatters and the filter here, so a log shipper sees one shape of line from every part of the web tier.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import orjson

from core.context import get_request_id

# Attributes every LogRecord has; anything else passed with ``extra=`` is emitted as a field.
# ``request`` is the HttpRequest Django's ``django.request`` logger attaches: its id is taken, not its repr.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "request"}

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Give every record a ``request_id``: its own, the one of the request it names, or the one in scope.

    Django logs a request's 4xx/5xx line (``django.request``) after the middleware stack has returned, so
    outside ``request_id_scope``; the record carries the request itself, whose ``id`` the middleware set.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            request_id = getattr(getattr(record, "request", None), "id", "")
            record.request_id = (request_id if isinstance(request_id, str) else "") or get_request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a traceback goes into ``exc``, so it never spans lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits: the line is still written
            return json.dumps(entry, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``MUTT_LOG_FORMAT`` (``json``, else plain)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(PLAIN_FORMAT)
