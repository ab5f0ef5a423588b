"""MUTT's URLs plus ``/test-only/boom``, a view that raises, for tests of what a 500 leaves in the logs."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from mutt_project.urls import urlpatterns as mutt_urlpatterns

BOOM_PATH = "/test-only/boom"


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom: a bug in a view")


urlpatterns = [path(BOOM_PATH.lstrip("/"), boom), *mutt_urlpatterns]
