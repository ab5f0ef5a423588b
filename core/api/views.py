"""The one base every API view builds on: version gate, headers, actor, audited writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.versioning import CURRENT_VERSION, DEPRECATED_VERSIONS, VERSION_HEADER
from core.audit import ActingCredential, Actor

REASON_HEADER = "X-Change-Reason"


def actor_for(request: Request) -> Actor:
    """The credential's own actor when it has one (an API key), else the signed-in user."""
    if isinstance(request.auth, ActingCredential):
        return request.auth.as_actor()
    return Actor.for_user(request.user)


def change_reason(request: Request, serializer: serializers.Serializer | None = None) -> str:
    if serializer is not None and serializer.validated_data.get("reason"):
        return str(serializer.validated_data["reason"])
    return request.headers.get(REASON_HEADER, "").strip()[:500]


class MuttViewMixin:
    """Refuses versions a view does not serve and stamps version (and deprecation) headers."""

    versions: frozenset[str] = frozenset({CURRENT_VERSION})

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if request.version not in self.versions:
            served = ", ".join(f"/api/{v}/" for v in sorted(self.versions))
            raise exceptions.NotFound(
                f"This endpoint is not part of API {request.version}; it is served under {served}."
            )

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        version = getattr(request, "version", None) or CURRENT_VERSION
        response[VERSION_HEADER] = version
        if version in DEPRECATED_VERSIONS:
            response["Deprecation"] = "true"
            response["Sunset"] = DEPRECATED_VERSIONS[version]
            response["Link"] = f'</api/{CURRENT_VERSION}/>; rel="successor-version"'
        return response


class ReasonSerializerMixin(serializers.Serializer):
    reason = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Why the change is made; recorded in the history.",
    )


class HistorySerializer(serializers.Serializer):
    history_id = serializers.IntegerField()
    history_date = serializers.DateTimeField()
    history_type = serializers.CharField()
    actor = serializers.CharField(source="history_actor")
    reason = serializers.CharField(source="history_change_reason", allow_null=True)
    request_id = serializers.CharField(source="history_request_id")
    changes = serializers.SerializerMethodField()

    def get_changes(self, record: Any) -> list[dict[str, Any]]:
        previous = record.prev_record
        if previous is None:
            return []
        delta = record.diff_against(previous)
        return [{"field": c.field, "old": c.old, "new": c.new} for c in delta.changes]


class AuditedModelViewSet(MuttViewMixin, viewsets.ModelViewSet):
    """CRUD whose writes go through the app's service functions with the caller as actor.

    A subclass declares queryset, serializer_class, filterset_class, and the two services.
    """

    save_service: Callable[..., models.Model]
    delete_service: Callable[..., None]

    def perform_create(self, serializer: serializers.ModelSerializer) -> None:
        data = {k: v for k, v in serializer.validated_data.items() if k != "reason"}
        instance = serializer.Meta.model(**data)
        serializer.instance = type(self).save_service(
            instance, actor=actor_for(self.request), reason=change_reason(self.request, serializer)
        )

    def perform_update(self, serializer: serializers.ModelSerializer) -> None:
        instance = serializer.instance
        for name, value in serializer.validated_data.items():
            if name != "reason":
                setattr(instance, name, value)
        serializer.instance = type(self).save_service(
            instance, actor=actor_for(self.request), reason=change_reason(self.request, serializer)
        )

    def perform_destroy(self, instance: models.Model) -> None:
        type(self).delete_service(instance, actor=actor_for(self.request), reason=change_reason(self.request))

    @action(detail=True, methods=["get"])
    def history(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The audit trail of one object, newest first, with field-level changes."""
        instance = self.get_object()
        records = instance.history.order_by("-history_date", "-history_id")
        page = self.paginate_queryset(records)
        return self.get_paginated_response(HistorySerializer(page, many=True).data)
