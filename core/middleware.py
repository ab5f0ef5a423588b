"""HTTP middleware shared by every app."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from core.context import new_request_id, request_id_scope

# A caller may pass its own id (a load balancer's, or an upstream correlation id) if it looks sane;
# anything else is replaced so ids stay safe to log and to put in headers.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
REQUEST_ID_HEADER = "X-Request-ID"
# Read from the WSGI environ: ``request.headers`` would copy every header of the request to find one.
_REQUEST_ID_META = "HTTP_X_REQUEST_ID"


class RequestIdMiddleware:
    """Give every request an id (``request.id``), scope logs and audit rows to it, echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get(_REQUEST_ID_META, "")
        request_id = incoming if _ACCEPTABLE_ID.match(incoming) else new_request_id()
        request.id = request_id  # type: ignore[attr-defined]
        with request_id_scope(request_id):
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response
