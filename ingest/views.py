"""``POST /api/v2/ingest`` (also ``/api/v1/ingest`` and ``/ingest``, both deprecated): events in.

A plain Django view rather than a DRF one: measured through the test client, DRF's request wrapping,
negotiation and response finalising added about 85 µs to a 430 µs single-event request (16% fewer
requests per second) and bought nothing ingest uses. So this view calls what ``MuttViewMixin`` and the
API's key authentication call (the version headers' writer, the API-key parser and its messages)
without DRF around them, with the same error shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.log import log_response
from django.views.decorators.csrf import csrf_exempt

from core.api.versioning import CURRENT_VERSION, MuttVersioning, stamp_version
from core.context import get_request_id, new_request_id
from ingest import metrics
from ingest.admission import Sender
from ingest.auth import AuthRefused, authenticate
from ingest.pipeline import IngestResult, ingest

CORRELATION_HEADER = "X-Correlation-ID"
SERVED_VERSIONS = frozenset({"v1", CURRENT_VERSION})
AUTH_RETRY_AFTER = 5


@csrf_exempt  # API-key callers, never a browser session
def ingest_view(request: HttpRequest, version: str = CURRENT_VERSION) -> HttpResponse:
    started = time.perf_counter()
    correlation_id = getattr(request, "id", None) or get_request_id() or new_request_id()
    try:
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            result = _https_required(request)
        else:
            result = _handle(request, version, correlation_id)
    except Exception:
        metrics.requests(500, "error").inc()
        raise
    response = HttpResponse(orjson.dumps(result.body), status=result.status, content_type="application/json")
    for name, value in result.headers.items():
        response[name] = value
    response[CORRELATION_HEADER] = correlation_id
    stamp_version(response, version if version in SERVED_VERSIONS else CURRENT_VERSION)
    metrics.requests(result.status, result.reason).inc()
    metrics.REQUEST_SECONDS.observe(time.perf_counter() - started)
    if result.status >= 500:
        # A refusal the client can retry (503 with Retry-After: backpressure, Redis or the key store
        # unavailable), not a server error: logged at WARNING, as Django logs the 4xx refusals, rather than
        # at ERROR. An unexpected error raises above and Django logs it at ERROR, with its traceback.
        log_response(
            "%s: %s", response.reason_phrase, request.path, response=response, request=request, level="warning"
        )
    return response


def _handle(request: HttpRequest, version: str, correlation_id: str) -> IngestResult:
    if version not in SERVED_VERSIONS:
        return _refusal(404, "not_found", MuttVersioning.invalid_version_message)
    if request.method != "POST":
        return _refusal(405, "method_not_allowed", f'Method "{request.method}" not allowed.', {"Allow": "POST"})
    try:
        api_key = authenticate(request.META)
    except AuthRefused as refused:
        if refused.status == 401:
            return _refusal(401, "unauthenticated", refused.detail, {"WWW-Authenticate": 'Bearer realm="mutt"'})
        if refused.status == 503:
            return _refusal(503, "auth_unavailable", refused.detail, {"Retry-After": str(AUTH_RETRY_AFTER)})
        return _refusal(refused.status, "forbidden", refused.detail)
    content_length = request.META.get("CONTENT_LENGTH")
    read: Callable[[int], bytes] = request.read
    if not content_length and request.META.get("wsgi.input_terminated"):
        # A chunked body (Vector, Fluent Bit): gunicorn de-chunks it and announces no length, so
        # Django's request would read nothing; the server's input ends with the body (PEP 3333's
        # wsgi.input_terminated), and read_body bounds it by count.
        read = _chunks(request.META["wsgi.input"])
    return ingest(
        sender=Sender(api_key.name, api_key.prefix, request.META.get("REMOTE_ADDR"), correlation_id),
        content_type=request.META.get("CONTENT_TYPE", ""),
        content_encoding=request.META.get("HTTP_CONTENT_ENCODING", ""),
        content_length=content_length,
        read=read,
    )


def _chunks(stream: Any) -> Callable[[int], bytes]:
    """``stream.read`` with a malformed chunk (gunicorn raises its own ParseException subclasses, not
    OSError) turned into the OSError ``read_body`` answers 400 for, never a 500."""

    def read(size: int) -> bytes:
        try:
            data: bytes = stream.read(size)  # the WSGI input stream, untyped
        except OSError:
            raise
        except Exception as exc:
            raise OSError(f"malformed chunked encoding ({type(exc).__name__})") from exc
        return data

    return read


def _https_required(request: HttpRequest) -> IngestResult:
    """With MUTT_SSL_REDIRECT on, plain-HTTP ingest gets a 403 naming the HTTPS address, not the redirect
    every other page gets (SECURE_REDIRECT_EXEMPT spares ingest): senders such as rsyslog omhttp do not
    follow redirects and would drop the batch with no clue why. Refused before the key is looked at."""
    host = settings.SECURE_SSL_HOST or request.get_host()
    detail = f"This server takes events over HTTPS only: send them to https://{host}{request.get_full_path()}."
    if "HTTP_X_API_KEY" in request.META or "HTTP_AUTHORIZATION" in request.META:
        detail += " The API key just travelled unencrypted; consider replacing it."
    return _refusal(403, "https_required", detail)


def _refusal(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> IngestResult:
    return IngestResult(status, reason, {"detail": detail}, headers or {})
