"""DRF authentication by API key and scope-based permission."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from configcenter.models import ApiKey, Scope
from configcenter.services import EMPTY_KEY, INVALID_KEY, find_active_key, presented_key, touch_last_used


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. ``request.auth`` is the ApiKey."""

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        raw = presented_key(request.META)
        if raw is None:
            return None  # DRF answers 401 with NO_CREDENTIALS where the view needs a caller
        if not raw:
            raise exceptions.AuthenticationFailed(EMPTY_KEY)
        api_key = find_active_key(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        touch_last_used(api_key)
        # DRF expects a user object; a key without an owner acts as an anonymous user with the key's scopes.
        return (api_key.owner or AnonymousUser(), api_key)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="mutt"'


# The Django model permission a session needs per method, as the admin asks for it.
SESSION_ACTIONS = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add", "PUT": "change",
                   "PATCH": "change", "DELETE": "delete"}  # fmt: skip


class HasScope(permissions.BasePermission):
    """API keys need the view's scope (``read`` for safe methods, ``write`` otherwise, unless the view
    names ``required_scope``).

    Sessions follow Django model permissions, like the admin: a staff user needs ``view_<model>`` to
    read and ``add``/``change``/``delete`` to write (``session_actions`` on a view maps a method to
    another action). A view without a model (secrets status) is for superusers only.
    """

    message = "This API key does not have the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        scope = getattr(view, "required_scope", None) or (
            Scope.READ if request.method in permissions.SAFE_METHODS else Scope.WRITE
        )
        if isinstance(request.auth, ApiKey):
            return request.auth.grants(scope)
        user = request.user
        if not (user and user.is_authenticated and user.is_staff and user.is_active):
            return False
        if user.is_superuser:
            return True
        queryset = getattr(view, "queryset", None)
        if queryset is None:
            return False
        method = (request.method or "GET").upper()
        action = getattr(view, "session_actions", {}).get(method) or SESSION_ACTIONS.get(method)
        if action is None:
            return False
        opts = queryset.model._meta
        return user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
