from __future__ import annotations

from configcenter.api.views import ConfigViewSet
from mutt_project.api.routers import MuttRouter

router = MuttRouter()
router.register("config", ConfigViewSet, basename="config")
urlpatterns = router.urls
