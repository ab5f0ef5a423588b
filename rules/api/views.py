from __future__ import annotations

from core.api.views import AuditedModelViewSet
from rules import services
from rules.api.serializers import AlertRuleSerializer, DevHostSerializer, DeviceTeamSerializer
from rules.filtersets import AlertRuleFilterSet, DevHostFilterSet, DeviceTeamFilterSet
from rules.models import AlertRule, DevHost, DeviceTeam


class _RulesAppViewSet(AuditedModelViewSet):
    save_service = staticmethod(services.save)
    delete_service = staticmethod(services.delete)


class AlertRuleViewSet(_RulesAppViewSet):
    queryset = AlertRule.objects.all()
    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilterSet


class DevHostViewSet(_RulesAppViewSet):
    queryset = DevHost.objects.all()
    serializer_class = DevHostSerializer
    filterset_class = DevHostFilterSet


class DeviceTeamViewSet(_RulesAppViewSet):
    queryset = DeviceTeam.objects.all()
    serializer_class = DeviceTeamSerializer
    filterset_class = DeviceTeamFilterSet
