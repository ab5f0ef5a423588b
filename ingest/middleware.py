"""A short way through Django for ingest requests: the ingest view without browser middleware.

Ingest callers are machines with API keys. Sessions, CSRF, user authentication, messages and static
files do nothing for them, yet on a single-event request those middleware and the walk through every
URL pattern before the ingest routes cost about as much as the view's own Python work. So this
middleware, placed right after ``SecurityMiddleware``, calls the ingest view itself and applies only
the hooks that change an ingest response:

- ``CommonMiddleware``: refuses a disallowed Host (400) or user agent, and sets Content-Length;
- ``XFrameOptionsMiddleware``: sets X-Frame-Options.

Middleware above this one (request id, security headers, HTTPS redirect) run for ingest as for any
request; middleware below it never see an ingest request, so one added there that must apply to
ingest belongs above it. The routes stay defined in the URLconf: a path is resolved once per process
and remembered, and only paths that resolve to the ingest view take the short way.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.urls import Resolver404, ResolverMatch, get_urlconf, resolve

from ingest import ROUTE_ENDINGS
from ingest.views import ingest_view

# Paths with those endings that are not ingest routes are remembered too; a flood of distinct ones
# must not grow the memory, so past this many the memory starts over.
_MAX_REMEMBERED = 256


class IngestShortcutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.common = CommonMiddleware(get_response)
        self.xframe = XFrameOptionsMiddleware(get_response)
        # An exception in the view becomes Django's error response right there, as it would at the
        # end of the full chain, so that response still passes through the hooks below.
        # django-stubs give the wrapper an awaitable result for any view; _call_view is synchronous.
        self.view: Callable[[HttpRequest], HttpResponse] = convert_exception_to_response(_call_view)  # type: ignore[assignment]
        self._routes: dict[tuple[str | None, str], ResolverMatch | None] = {}

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        match = self.ingest_route(request.path_info, getattr(request, "urlconf", None) or get_urlconf())
        if match is None:
            return self.get_response(request)
        # In the order the full chain would apply them: Common around XFrame around the view.
        response: HttpResponseBase | None = self.common.process_request(request)
        if response is None:
            request.resolver_match = match
            response = self.xframe.process_response(request, self.view(request))
        return self.common.process_response(request, response)

    def ingest_route(self, path: str, urlconf: str | None = None) -> ResolverMatch | None:
        """What ``urlconf`` (the one in force by default) resolves ``path`` to, when that is the
        ingest view; else None."""
        if not path.endswith(ROUTE_ENDINGS):  # other paths are not looked up at all
            return None
        remembered = (urlconf, path)
        try:
            return self._routes[remembered]
        except KeyError:
            pass
        try:
            match: ResolverMatch | None = resolve(path, urlconf)
        except Resolver404:
            match = None
        if match is not None and match.func is not ingest_view:
            match = None
        if len(self._routes) >= _MAX_REMEMBERED:
            self._routes.clear()
        self._routes[remembered] = match
        return match


def _call_view(request: HttpRequest) -> HttpResponse:
    match = request.resolver_match  # set by IngestShortcutMiddleware.__call__ right before this runs
    if match is None:  # only a caller that skipped the middleware; a 500 naming it beats an AttributeError
        raise RuntimeError("the ingest shortcut's view was called without a resolved route")
    response: HttpResponse = match.func(request, *match.args, **match.kwargs)
    return response
