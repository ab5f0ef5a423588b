"""The Content Security Policy header (django-csp) on every response except ingest's."""

from __future__ import annotations

from csp.middleware import CSPMiddleware
from django.http import HttpRequest
from django.http.response import HttpResponseBase

# The ingest routes (ingest/urls.py). Their callers are machines, and django-csp builds the policy
# afresh for each response (about 0.1 ms), as much as a fifth of a small ingest request's own work.
INGEST_ROUTES = frozenset({"ingest", "ingest-legacy"})


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, minus ingest responses.

    The ingest shortcut answers before this middleware; skipping ingest here too keeps its answer the
    same as through every middleware (tests/ingest/test_ingest_shortcut.py).
    """

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name in INGEST_ROUTES:
            return response
        return super().process_response(request, response)
