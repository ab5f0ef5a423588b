"""The Content Security Policy header (django-csp) on every response except those of the routes named in
``MUTT_CSP_EXEMPT_ROUTES`` (ingest's; the benchmark adds its ceiling route, ``benchmarks/settings.py``)."""

from __future__ import annotations

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, minus the responses of ``MUTT_CSP_EXEMPT_ROUTES`` (URL names).

    The ingest shortcut answers before this middleware; skipping ingest here too keeps its answer the
    same as through every middleware (tests/ingest/test_ingest_shortcut.py).
    """

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name in settings.MUTT_CSP_EXEMPT_ROUTES:
            return response
        return super().process_response(request, response)
