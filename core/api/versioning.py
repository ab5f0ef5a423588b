"""API versions: ``/api/v1/`` (legacy, deprecated) and ``/api/v2/`` (current), and the headers saying so."""

from __future__ import annotations

from django.http.response import HttpResponseBase
from rest_framework.versioning import URLPathVersioning

CURRENT_VERSION = "v2"
# v1 keeps the legacy integrations working until its sunset date; every v1 response says so.
DEPRECATED_VERSIONS = {"v1": "Tue, 30 Jun 2027 00:00:00 GMT"}
VERSION_HEADER = "X-API-Version"
SUCCESSOR_LINK = f'</api/{CURRENT_VERSION}/>; rel="successor-version"'


def stamp_version(response: HttpResponseBase, version: str) -> None:
    """Name the response's API version; for a deprecated one also its sunset and successor (RFC 8594).

    Every API response carries these: DRF views through ``MuttViewMixin``, ingest (a plain view) itself.
    """
    response[VERSION_HEADER] = version
    sunset = DEPRECATED_VERSIONS.get(version)
    if sunset is not None:
        response["Deprecation"] = "true"
        response["Sunset"] = sunset
        response["Link"] = SUCCESSOR_LINK


class MuttVersioning(URLPathVersioning):
    invalid_version_message = "This API version is not supported; use /api/v2/ (current) or /api/v1/ (deprecated)."
