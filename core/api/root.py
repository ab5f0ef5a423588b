"""``/api/<version>/``: the API's front door, links to every resource, the schema and the docs."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from core.api.versioning import CURRENT_VERSION
from core.api.views import MuttViewMixin

# Link name -> URL name; what each link answers is still guarded by its own view's permissions.
_LINKS = {
    "rules": "alertrule-list",
    "dev-hosts": "devhost-list",
    "device-teams": "deviceteam-list",
    "config": "config-list",
    "secrets": "secrets",
    "ingest": "ingest",
    "schema": "api-schema",
    "docs": "api-docs",
}


class ApiRootView(MuttViewMixin, APIView):
    """Lists the endpoints of the current version. Open to anyone: it names no more than the schema does."""

    permission_classes = [permissions.AllowAny]
    versions = frozenset({CURRENT_VERSION})

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({name: reverse(url_name, request=request) for name, url_name in _LINKS.items()})
