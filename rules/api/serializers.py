from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.api.views import ReasonSerializerMixin
from rules.models import AlertRule, DevHost, DeviceTeam


class AlertRuleSerializer(ReasonSerializerMixin, serializers.ModelSerializer):
    class Meta:
        model = AlertRule
        fields = [
            "id",
            "name",
            "description",
            "match_type",
            "match_string",
            "trap_oid",
            "syslog_severity",
            "priority",
            "prod_handling",
            "dev_handling",
            "team_assignment",
            "severity",
            "signature_fields",
            "is_active",
            "created_at",
            "updated_at",
            "reason",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # A space is part of a substring or an RE2 pattern ("^ "): the model keeps it, so must the API.
        extra_kwargs = {"match_string": {"trim_whitespace": False}}


class DevHostSerializer(ReasonSerializerMixin, serializers.ModelSerializer):
    class Meta:
        model = DevHost
        fields = ["id", "hostname", "description", "created_at", "updated_at", "reason"]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness is checked by the model after the hostname is lower-cased.
        extra_kwargs: dict[str, dict[str, Any]] = {"hostname": {"validators": []}}


class DeviceTeamSerializer(ReasonSerializerMixin, serializers.ModelSerializer):
    class Meta:
        model = DeviceTeam
        fields = ["id", "hostname", "team_name", "created_at", "updated_at", "reason"]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs: dict[str, dict[str, Any]] = {"hostname": {"validators": []}}
