"""Runtime settings over the API: ``GET /api/v2/config``, ``GET|PUT /api/v2/config/{key}``, history."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from configcenter import settings_service
from configcenter.models import DynamicSetting, Scope
from configcenter.registry import InvalidSettingValue, SettingDef, UnknownSetting, get_definition
from core.api.views import REASON_HELP, MuttViewMixin, actor_for, change_reason
from core.audit import REASON_MAX_LENGTH


class SettingChangeSerializer(serializers.Serializer):
    value = serializers.JSONField(help_text="The new value: a number, boolean or text as the key's type says.")
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH, help_text=REASON_HELP)


# A key's history is short (people change settings), so it is one page; this bounds a runaway script's.
HISTORY_LIMIT = 500


class ConfigViewSet(MuttViewMixin, viewsets.ViewSet):
    lookup_field = "key"
    lookup_value_regex = "[A-Za-z0-9_.-]+"
    serializer_class = SettingChangeSerializer
    # For session users' model permissions (HasScope): returning a key to its default is a change.
    queryset = DynamicSetting.objects.all()
    session_actions = {"DELETE": "change"}

    @property
    def required_scope(self) -> str:
        # For keys: reading settings is routine, changing them an administrator's act. Sessions need the
        # change permission on runtime settings instead, as in the admin (HasScope).
        return Scope.READ if self.request.method in permissions.SAFE_METHODS else Scope.ADMIN

    def _definition(self, key: str) -> SettingDef:
        """The key's registry definition; 404 for a key nobody registered."""
        try:
            return get_definition(key)
        except UnknownSetting as exc:
            raise NotFound(str(exc)) from None

    def _describe(self, key: str) -> dict[str, Any]:
        self._definition(key)
        return settings_service.describe(key)[0]

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"count": len(rows := settings_service.describe()), "results": rows})

    def retrieve(self, request: Request, key: str, *args: Any, **kwargs: Any) -> Response:
        return Response(self._describe(key))

    def update(self, request: Request, key: str, *args: Any, **kwargs: Any) -> Response:
        self._describe(key)
        serializer = SettingChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with _value_refusals():
            settings_service.set_setting(
                key, serializer.validated_data["value"], actor=actor_for(request),
                reason=serializer.validated_data["reason"],
            )  # fmt: skip
        return Response(self._describe(key))

    def destroy(self, request: Request, key: str, *args: Any, **kwargs: Any) -> Response:
        """Return the key to its default (reason in the X-Change-Reason header)."""
        self._describe(key)
        with _value_refusals():
            settings_service.unset_setting(key, actor=actor_for(request), reason=change_reason(request))
        return Response(self._describe(key))

    @action(detail=True, methods=["get"])
    def history(self, request: Request, key: str, *args: Any, **kwargs: Any) -> Response:
        definition = self._definition(key)
        results = [
            {
                "history_date": entry.record.history_date,
                "actor": entry.record.history_actor,
                "reason": entry.record.history_change_reason,
                "request_id": entry.record.history_request_id,
                "old": None if entry.previous is None else entry.previous.value,
                "new": entry.record.value,
                "old_effective": None if entry.previous is None else definition.effective(entry.previous.value),
                "new_effective": definition.effective(entry.record.value),
            }
            for entry in settings_service.history(key, limit=HISTORY_LIMIT)
        ]
        return Response({"count": len(results), "results": results})


@contextlib.contextmanager
def _value_refusals() -> Iterator[None]:
    """A value the registry refuses (type, bounds, or its relation to another key's) answers 400 on ``value``."""
    try:
        yield
    except InvalidSettingValue as exc:
        raise ValidationError({"value": [exc.message]}) from None


class SecretStatusView(MuttViewMixin, APIView):
    """Which secrets are configured, from where, with masked fingerprints; never a value."""

    required_scope = Scope.ADMIN  # sessions: superusers only (no model permission covers secrets)

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        from core.secrets import secret_status

        rows = secret_status()
        return Response({"count": len(rows), "results": rows})
