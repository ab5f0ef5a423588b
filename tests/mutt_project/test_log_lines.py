"""Log lines never cost a request its answer: gunicorn's access logger and MUTT's formatters never raise."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta

from gunicorn.config import Config
from gunicorn.http.wsgi import Response

from core.logging import JsonFormatter, RequestIdFilter
from mutt_project.gunicorn_logging import AccessLogger


class _Request:
    """What gunicorn's parser leaves of a request it refused: a method, a path, no headers to speak of."""

    method, uri, path, version, headers = "POST", "/api/v2/ingest", "/api/v2/ingest", (1, 1), []
    should_close = lambda self: True  # noqa: E731


def _logger_writing_to(stream: io.StringIO, monkeypatch) -> AccessLogger:
    monkeypatch.setenv("MUTT_LOG_FORMAT", "json")
    cfg = Config()
    cfg.set("accesslog", "-")
    logger = AccessLogger(cfg)
    for handler in logger.access_log.handlers + logger.error_log.handlers:
        handler.setStream(stream)
    return logger


def test_the_access_line_of_a_response_gunicorn_built_for_a_parse_error(monkeypatch):
    stream = io.StringIO()
    logger = _logger_writing_to(stream, monkeypatch)
    resp = Response(_Request(), None, logger.cfg)  # as gunicorn's handle_error builds it: no status_code
    resp.status = "400 Bad Request"
    logger.access(resp, _Request(), {"REQUEST_METHOD": "POST", "RAW_URI": "/api/v2/ingest"}, timedelta(0))
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["logger"], line["status"], line["request_id"]) == ("gunicorn.access", 400, "-")
    assert line["path"] == "/api/v2/ingest"


def test_the_access_logger_swallows_what_it_cannot_read(monkeypatch):
    stream = io.StringIO()
    logger = _logger_writing_to(stream, monkeypatch)
    logger.access(object(), object(), {}, None)  # nothing it expects: it must not raise
    assert "Could not write the access line" in stream.getvalue()


def test_a_json_line_is_written_whatever_the_fields_hold():
    record = logging.makeLogRecord({"msg": "odd fields", "levelname": "INFO", "huge": 2**70, "raw": b"\xff"})
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert (line["huge"], line["request_id"]) == (2**70, "-")
