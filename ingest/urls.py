"""Ingest routes: under ``/api/<version>/`` and, for existing rsyslog configurations, ``/ingest``."""

from __future__ import annotations

from django.urls import re_path

from ingest.views import ingest_view

# A trailing slash is optional: senders are configured by hand and both spellings are common.
api_urlpatterns = [
    re_path(r"^ingest/?$", ingest_view, name="ingest"),
]

# /ingest behaves exactly like /api/v1/ingest, deprecation headers included.
legacy_urlpatterns = [
    re_path(r"^ingest/?$", ingest_view, {"version": "v1"}, name="ingest-legacy"),
]
