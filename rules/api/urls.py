from __future__ import annotations

from core.api.routers import MuttRouter
from rules.api.views import AlertRuleViewSet, DevHostViewSet, DeviceTeamViewSet

router = MuttRouter()
router.register("rules", AlertRuleViewSet)
router.register("dev-hosts", DevHostViewSet)
router.register("device-teams", DeviceTeamViewSet)
urlpatterns = router.urls
