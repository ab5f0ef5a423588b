from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from rules.models import AlertRule, DevHost, DeviceTeam


class AlertRuleFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search name, description, match string, OID, team")

    class Meta:
        model = AlertRule
        fields = ["match_type", "is_active", "prod_handling", "dev_handling", "team_assignment", "severity"]

    def search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(
            Q(name__icontains=value)
            | Q(description__icontains=value)
            | Q(match_string__icontains=value)
            | Q(trap_oid__startswith=value)
            | Q(team_assignment__icontains=value)
        )


class DevHostFilterSet(django_filters.FilterSet):
    class Meta:
        model = DevHost
        fields = {"hostname": ["exact", "icontains"]}


class DeviceTeamFilterSet(django_filters.FilterSet):
    class Meta:
        model = DeviceTeam
        fields = {"hostname": ["exact", "icontains"], "team_name": ["exact"]}
