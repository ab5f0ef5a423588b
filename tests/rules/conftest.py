"""Fixtures of the alerter's tests (tests/rules/test_alerter_*.py)."""

from __future__ import annotations

import pytest

from core.audit import Actor
from rules import services
from rules.alerter import Alerter
from rules.models import AlertRule

OPS = Actor.cli("ops")


@pytest.fixture
def link_rule(db):
    return services.create(
        AlertRule, actor=OPS, name="link down", match_type="contains", match_string="changed state to down",
        priority=10, team_assignment="network-ops", severity="major", dev_handling="ignore",
    )  # fmt: skip


@pytest.fixture
def alerters():
    """Make alerters that are stopped after the test: a pipelined one's audit writer thread holds a
    database connection of its own until then."""
    made: list[Alerter] = []

    def make(consumer: str, **kwargs) -> Alerter:
        made.append(Alerter(consumer, **kwargs))
        return made[-1]

    yield make
    for alerter in made:
        alerter.stop()
