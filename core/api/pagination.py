from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class MuttPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000
