"""The alert a rule raises for an event: the payload the alerter queues for the forwarder.

One function, used by the alerter and by the admin's rule tester, so the tester shows exactly the
signature and description the alert will carry. Its shape is ``core.contracts.Alert``; what the forwarder
makes of it for Moogsoft is delivery/destinations/moogsoft_events.py; the choices are recorded in
docs/adr/ADR-005-moogsoft-event-fields.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.contracts import RULE_ALERT, Alert
from rules import signature
from rules.engine import DEFAULT_ALERT_SEVERITY, RuleSpec

MAX_DESCRIPTION = 2000


def rule_alert(
    event: Mapping[str, Any], rule: RuleSpec, *, team: str, severity: str, handling: str, environment: str
) -> Alert:
    """The alert of ``event`` matched by ``rule``.

    ``description``: the message, else the rendered trap (OID and varbinds), else the rule's description,
    else its name: never empty. ``details.varbinds``: the trap's varbinds as ingest kept them.
    ``signature``: the rule's signature fields (rules/signature.py)."""
    hostname = event["hostname"]
    message = event.get("message") or ""
    trap_oid = event.get("trap_oid") or ""
    source_type = event.get("source_type") or ""
    variables = event.get("variables")
    description = message or signature.render_trap(trap_oid, variables) or rule.description or rule.name
    alert: Alert = {
        "kind": RULE_ALERT,
        "event_id": event["event_id"],
        "correlation_id": event.get("correlation_id") or "",
        "hostname": hostname,
        "rule_id": rule.id,
        "rule_name": rule.name,
        "team": team,
        "severity": severity or DEFAULT_ALERT_SEVERITY,
        "handling": handling,
        "environment": environment,
        "description": description[:MAX_DESCRIPTION],
        "event_time": event["timestamp"],
        "trap_oid": trap_oid,
        "source_type": source_type,
        "signature": signature.build(
            rule.signature_fields,
            hostname=hostname,
            rule_id=rule.id,
            trap_oid=trap_oid,
            source_type=source_type,
            message=message,
            variables=variables,
        ),
    }
    if variables:
        alert["details"] = {"varbinds": variables}
    return alert
