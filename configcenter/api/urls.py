from __future__ import annotations

from django.urls import re_path

from configcenter.api.views import ConfigViewSet, SecretStatusView
from core.api.routers import MuttRouter

router = MuttRouter()
router.register("config", ConfigViewSet, basename="config")
urlpatterns = [*router.urls, re_path(r"^secrets/?$", SecretStatusView.as_view(), name="secrets")]
