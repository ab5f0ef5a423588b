"""The one base every API view builds on: version gate, headers, actor, audited writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.versioning import CURRENT_VERSION, stamp_version
from core.audit import REASON_MAX_LENGTH, ActingCredential, Actor, clip_reason
from core.history import Entry, trail, with_previous

REASON_HEADER = "X-Change-Reason"
REASON_HELP = "Why the change is made; recorded in the history."


def actor_for(request: Request) -> Actor:
    """The credential's own actor when it has one (an API key), else the signed-in user."""
    if isinstance(request.auth, ActingCredential):
        return request.auth.as_actor()
    return Actor.for_user(request.user)


def change_reason(request: Request, serializer: serializers.Serializer | None = None) -> str:
    if serializer is not None and serializer.validated_data.get("reason"):
        return str(serializer.validated_data["reason"])
    return clip_reason(request.headers.get(REASON_HEADER, ""))


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
        stamp_version(response, getattr(request, "version", None) or CURRENT_VERSION)
        return response


class ReasonSerializerMixin(serializers.Serializer):
    reason = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=REASON_MAX_LENGTH,
        help_text=REASON_HELP,
    )


class HistorySerializer(serializers.Serializer):
    """One :class:`core.history.Entry`: the row's audit columns and the fields it changed."""

    history_id = serializers.IntegerField(source="record.history_id")
    history_date = serializers.DateTimeField(source="record.history_date")
    history_type = serializers.CharField(source="record.history_type")
    actor = serializers.CharField(source="record.history_actor")
    reason = serializers.CharField(source="record.history_change_reason", allow_null=True)
    request_id = serializers.CharField(source="record.history_request_id")
    changes = serializers.SerializerMethodField()

    def get_changes(self, entry: Entry) -> list[dict[str, Any]]:
        delta = entry.delta()
        return [] if delta is None else [{"field": c.field, "old": c.old, "new": c.new} for c in delta.changes]


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
        page = self.paginate_queryset(trail(self.get_object().history.all()))
        return self.get_paginated_response(HistorySerializer(with_previous(page or []), many=True).data)
