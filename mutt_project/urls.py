from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from delivery.status import metrics_view
from ingest.urls import api_urlpatterns as ingest_api_urlpatterns
from ingest.urls import legacy_urlpatterns as ingest_legacy_urlpatterns
from mutt_project import health

admin.site.site_header = "MUTT operations"
admin.site.site_title = "MUTT"

api_patterns = [
    path("", include("rules.api.urls")),
    path("", include("configcenter.api.urls")),
    path("", include(ingest_api_urlpatterns)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Prometheus scrape endpoint; gunicorn workers share one view of it via multiprocess files, and the
    # delivery state (breaker, retries, held alerts) is read from Redis at each scrape.
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    re_path(r"^api/(?P<version>v[0-9]+)/", include(api_patterns)),
    path("", include(ingest_legacy_urlpatterns)),
]
