"""MUTT's URLs plus ``/bench/bare/ingest``: a view that reads the body and answers 202, the framework
ceiling.

The ingest stage posts the same single-event requests to it as to ``/api/v2/ingest``, through the
same gunicorn and middleware, so the difference between the two is what ingest itself costs. Its path
ends like an ingest route so that gunicorn's access logger treats both alike (no line for an accepted
request, see ``mutt_project/gunicorn_logging.py``); it is not the ingest view, so it takes Django's
full middleware chain, except the Content Security Policy, which it skips as ingest does
(``benchmarks/settings.py``).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from mutt_project.urls import urlpatterns as mutt_urlpatterns

BARE_PATH = "/bench/bare/ingest"


@csrf_exempt
def bare(request: HttpRequest) -> HttpResponse:
    request.read()
    return HttpResponse(b'{"accepted": 1}', status=202, content_type="application/json")


urlpatterns = [path(BARE_PATH.lstrip("/"), bare, name="bench-bare"), *mutt_urlpatterns]
