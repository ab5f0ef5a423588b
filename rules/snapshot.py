"""Build the engine's compiled snapshot from the database (three queries, no per-event ORM)."""

from __future__ import annotations

from rules.engine import RuleSet, RuleSpec
from rules.models import AlertRule, DevHost, DeviceTeam
from rules.signature import DEFAULT_FIELDS, parse_fields

_SPEC_FIELDS = (
    "id",
    "priority",
    "match_type",
    "match_string",
    "trap_oid",
    "syslog_severity",
    "prod_handling",
    "dev_handling",
    "team_assignment",
    "severity",
    "description",
    "name",
    "signature_fields",
)


def signature_fields(text: str) -> tuple[str, ...]:
    """A rule's parsed signature fields; the default for text that no longer parses (validated on save)."""
    try:
        return parse_fields(text)
    except ValueError:
        return DEFAULT_FIELDS


def build_ruleset() -> RuleSet:
    """Compile the active rules with the current development hosts and device teams."""
    rows = AlertRule.objects.filter(is_active=True).order_by("priority", "id").values(*_SPEC_FIELDS, "updated_at")
    specs = []
    newest = ""
    for row in rows:
        newest = max(newest, row.pop("updated_at").isoformat())
        row["signature_fields"] = signature_fields(row["signature_fields"])
        specs.append(RuleSpec(**row))
    return RuleSet.compile(
        specs,
        # Oldest first: between two globs equally specific the older entry wins.
        dev_hosts=DevHost.objects.order_by("id").values_list("hostname", flat=True),
        device_teams=list(DeviceTeam.objects.order_by("id").values_list("hostname", "team_name")),
        version=f"{len(specs)}@{newest}",
    )
