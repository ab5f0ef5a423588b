from __future__ import annotations

from rest_framework.routers import DefaultRouter

from rules.api.views import AlertRuleViewSet, DevHostViewSet, DeviceTeamViewSet

router = DefaultRouter()
router.register("rules", AlertRuleViewSet)
router.register("dev-hosts", DevHostViewSet)
router.register("device-teams", DeviceTeamViewSet)
urlpatterns = router.urls
