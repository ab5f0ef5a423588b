"""API versions: ``/api/v1/`` (legacy, deprecated) and ``/api/v2/`` (current)."""

from __future__ import annotations

from rest_framework.versioning import URLPathVersioning

CURRENT_VERSION = "v2"
# v1 keeps the legacy integrations working until its sunset date; every v1 response says so.
DEPRECATED_VERSIONS = {"v1": "Tue, 30 Jun 2027 00:00:00 GMT"}
VERSION_HEADER = "X-API-Version"


class MuttVersioning(URLPathVersioning):
    invalid_version_message = "This API version is not supported; use /api/v2/ (current) or /api/v1/ (deprecated)."
