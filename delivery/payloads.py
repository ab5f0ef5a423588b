"""The alert as the alerter queues it on the alert stream, for every destination to map.

How an alert becomes a request body is each destination's business (delivery/destinations/: Moogsoft's
mapping is delivery/destinations/moogsoft_events.py). This type moves to the stream contracts
(core/contracts.py) with the other stream shapes.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Alert(TypedDict):
    """An alert as the alerter queues it (one per alerting event, or one per flood).

    The mapping functions accept any mapping of this shape, so a decoded stream entry needs no cast.
    """

    kind: str  # rule | flood
    event_id: str
    correlation_id: str
    hostname: str
    rule_id: int | None
    team: str
    severity: str
    handling: str
    environment: str
    description: str
    event_time: str  # ISO 8601
    trap_oid: str
    source_type: str
    signature: str
    rule_name: NotRequired[str]
    details: NotRequired[dict[str, Any]]
    resent: NotRequired[bool]
