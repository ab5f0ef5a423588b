"""A stored setting that today's validation refuses is listed by a system check and logged once per process,
not on every read."""

from __future__ import annotations

import logging

import pytest
from django.core.checks import run_checks

from configcenter import mirror
from configcenter.models import DynamicSetting

pytestmark = pytest.mark.django_db

# Accepted by an older MUTT, refused now: a file: URL, and a URL carrying a password.
BAD = {"moog_url": "file:///etc/passwd", "notify_webhook_url": "https://ops:hunter2-secret@hooks.example.net/"}


@pytest.fixture
def stored_bad_values():
    for setting_key, value in BAD.items():
        # As an older version stored it: a plain UPDATE, past today's validation (and its history).
        DynamicSetting.objects.filter(key=setting_key).update(value=value)
    mirror.forget_reported()


def test_the_check_lists_each_stored_value_that_fails_validation(stored_bad_values):
    messages = [m for m in run_checks(include_deployment_checks=True) if m.id == "mutt.W005"]
    assert len(messages) == 1
    text = messages[0].msg + (messages[0].hint or "")
    for setting_key in BAD:
        assert setting_key in text
    assert "scheme 'file'" in text
    assert "hunter2-secret" not in text, "the check never shows a stored value: it may hold a secret"
    assert "default" in text


def test_the_check_is_quiet_when_every_stored_value_is_valid():
    assert not [m for m in run_checks(include_deployment_checks=True) if m.id == "mutt.W005"]


def test_a_refused_stored_value_is_logged_once_per_process(stored_bad_values, caplog):
    caplog.set_level(logging.INFO, logger="mutt.config")
    for _ in range(3):
        state = mirror.database_state()
        assert state["moog_url"][0] is None  # still the default
    mirror.replace(BAD)  # the Redis copy holds them too, as an older writer left it
    for _ in range(3):
        assert "moog_url" not in mirror.read()
    lines = [r for r in caplog.records if r.name == "mutt.config" and r.levelno >= logging.WARNING]
    logged = sorted(r.getMessage().split(":")[0] for r in lines)
    assert logged == ["moog_url", "notify_webhook_url"], [r.getMessage() for r in lines]
    assert all("hunter2-secret" not in r.getMessage() for r in lines)
    assert all("mutt.W005" in r.getMessage() for r in lines)
