from __future__ import annotations

from csp.decorators import csp_update
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core import health
from core.api.root import ApiRootView
from ingest.urls import api_urlpatterns as ingest_api_urlpatterns
from ingest.urls import legacy_urlpatterns as ingest_legacy_urlpatterns
from mutt_project.metrics import metrics_view

admin.site.site_header = "MUTT operations"
admin.site.site_title = "MUTT"
# MUTT has no public site: the admin's "View site" link opens the API root, which links to the docs.
admin.site.site_url = "/api/v2/"

# Swagger UI comes from this origin's static files (drf-spectacular-sidecar), so only its page's own
# <style> block needs more than the default policy; a style block cannot run code.
_SWAGGER_CSP = {"style-src": ["'unsafe-inline'"]}

api_patterns: list[URLPattern | URLResolver] = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("", include("rules.api.urls")),
    path("", include("configcenter.api.urls")),
    path("", include(ingest_api_urlpatterns)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start script as a file, not inline, so script-src stays 'self'.
    path(
        "docs/", csp_update(_SWAGGER_CSP)(SpectacularSwaggerSplitView.as_view(url_name="api-schema")), name="api-docs"
    ),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Prometheus scrape endpoint; gunicorn workers share one view of it via multiprocess files, and the
    # delivery state and the scheduled jobs' runs are read from Redis at each scrape, retention's counts
    # from its run records (mutt_project/metrics.py).
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    re_path(r"^api/(?P<version>v[0-9]+)/", include(api_patterns)),
    path("", include(ingest_legacy_urlpatterns)),
    # A browser pointed at the bare host lands on the admin rather than a 404.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
]
