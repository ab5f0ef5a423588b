"""First-run setup for a single machine: an admin user, two API keys, sample rules, a credentials file.

Each step runs once per database (recorded as a ``BootstrapStep``). The generated password and keys
exist in clear text only in ``credentials.json`` (mode 0600); if that file is lost, the next run
re-issues them (new password, old bootstrap keys revoked) and says so, since hashes cannot be undone.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from configcenter import services as config_services
from configcenter.models import ApiKey, BootstrapStep, Scope
from core.audit import Actor
from rules import services as rule_services
from rules.models import AlertRule, DevHost, DeviceTeam

logger = logging.getLogger("mutt.bootstrap")

ACTOR = Actor.system("bootstrap")
ADMIN_USERNAME = "admin"
ADMIN_KEY_NAME = "bootstrap-admin"
INGEST_KEY_NAME = "bootstrap-ingest"

SAMPLE_RULES: list[dict[str, Any]] = [
    {
        "name": "Interface down",
        "match_type": "contains",
        "match_string": "changed state to down",
        "priority": 10,
        "prod_handling": "page_and_ticket",
        "dev_handling": "ticket_only",
        "team_assignment": "network-ops",
        "severity": "major",
        "description": "A link went down (syslog LINK-3-UPDOWN and similar).",
    },
    {
        "name": "BGP neighbour down",
        "match_type": "regex",
        "match_string": r"BGP-\d-ADJCHANGE: neighbor \S+ Down",
        "priority": 5,
        "prod_handling": "page_and_ticket",
        "dev_handling": "ticket_only",
        "team_assignment": "network-core",
        "severity": "critical",
        "description": "A BGP session dropped.",
    },
    {
        "name": "Power supply failure",
        "match_type": "regex",
        "match_string": r"(?i)power supply \d+ (failed|removed)",
        "priority": 20,
        "prod_handling": "page_and_ticket",
        "dev_handling": "ticket_only",
        "team_assignment": "datacenter",
        "severity": "critical",
        "description": "PSU failure or removal.",
    },
    {
        "name": "Cisco enterprise traps",
        "match_type": "oid_prefix",
        "trap_oid": "1.3.6.1.4.1.9",
        "priority": 50,
        "prod_handling": "ticket_only",
        "dev_handling": "ignore",
        "severity": "warning",
        "description": "Any trap from the Cisco enterprise tree opens a ticket.",
    },
    {
        "name": "linkDown trap",
        "match_type": "oid_prefix",
        "trap_oid": "1.3.6.1.6.3.1.1.5.3",
        "priority": 15,
        "prod_handling": "page_only",
        "dev_handling": "ignore",
        "team_assignment": "network-ops",
        "severity": "major",
        "description": "SNMPv2 linkDown notification.",
    },
    {
        "name": "Config change noise",
        "match_type": "contains",
        "match_string": "%SYS-5-CONFIG_I",
        "priority": 90,
        "prod_handling": "ignore",
        "dev_handling": "ignore",
        "severity": "clear",
        "description": "Configuration saved from a terminal: informational, never alert.",
    },
    {
        "name": "Authentication failures",
        "match_type": "contains",
        "match_string": "authentication failed",
        "syslog_severity": 4,
        "priority": 60,
        "prod_handling": "ticket_only",
        "dev_handling": "ignore",
        "team_assignment": "security",
        "severity": "minor",
        "description": "Repeated login failures at warning severity open a ticket for security.",
    },
]
SAMPLE_DEV_HOSTS = ["lab-rtr-01", "lab-sw-01", "staging-fw-01"]
SAMPLE_DEVICE_TEAMS = {"core-rtr-01": "network-core", "edge-fw-01": "security", "dc1-pdu-01": "datacenter"}


def _step_done(name: str) -> bool:
    return BootstrapStep.objects.filter(name=name).exists()


def _mark(name: str) -> None:
    BootstrapStep.objects.get_or_create(name=name)


def write_credentials(path: Path, data: dict[str, str]) -> None:
    """Write the file with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_credentials(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _issue_admin(reissue: bool) -> str:
    User = get_user_model()
    password = secrets.token_urlsafe(18)
    user = User.objects.filter(username=ADMIN_USERNAME).first()
    if user is None:
        User.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
    elif reissue:
        user.set_password(password)
        user.save(update_fields=["password"])
    return password


def _issue_key(name: str, scope: str, reason: str) -> str:
    for old in ApiKey.objects.filter(name__startswith=name, revoked_at__isnull=True):
        config_services.revoke_api_key(actor=ACTOR, api_key=old, reason="credentials file lost; key re-issued")
    count = ApiKey.objects.filter(name__startswith=name).count()
    key_name = name if count == 0 else f"{name}-{count + 1}"
    _, raw = config_services.create_api_key(actor=ACTOR, name=key_name, scopes=[scope], reason=reason)
    return raw


def load_sample_data() -> int:
    """Sample rules, dev hosts and teams for a first look; returns how many objects were created."""
    created = 0
    reason = "sample data for a new installation"
    for fields in SAMPLE_RULES:
        rule_services.create(AlertRule, actor=ACTOR, reason=reason, **fields)
        created += 1
    for hostname in SAMPLE_DEV_HOSTS:
        rule_services.create(DevHost, actor=ACTOR, reason=reason, hostname=hostname, description="lab device")
        created += 1
    for hostname, team in SAMPLE_DEVICE_TEAMS.items():
        rule_services.create(DeviceTeam, actor=ACTOR, reason=reason, hostname=hostname, team_name=team)
        created += 1
    return created


def bootstrap(credentials_path: Path, *, http_url: str, mock_moog_url: str, sample_data: bool = True) -> dict[str, str]:
    """Run the one-time steps and return the credentials (also written to ``credentials_path``)."""
    existing = read_credentials(credentials_path)
    with transaction.atomic():
        first_time = not _step_done("credentials")
        lost = not first_time and not {"admin_password", "api_key", "ingest_api_key"} <= existing.keys()
        if first_time or lost:
            if lost:
                logger.warning("credentials file %s is missing or incomplete; re-issuing credentials", credentials_path)
            existing = {
                "admin_username": ADMIN_USERNAME,
                "admin_password": _issue_admin(reissue=lost),
                "api_key": _issue_key(ADMIN_KEY_NAME, Scope.ADMIN, "bootstrap admin key"),
                "ingest_api_key": _issue_key(INGEST_KEY_NAME, Scope.INGEST, "bootstrap ingest key"),
            }
            _mark("credentials")
        if sample_data and not _step_done("sample_data"):
            count = load_sample_data()
            _mark("sample_data")
            logger.info("loaded %d sample rules, development hosts and device teams", count)
    credentials = {**existing, "http_url": http_url, "mock_moog_url": mock_moog_url}
    write_credentials(credentials_path, credentials)
    return credentials
