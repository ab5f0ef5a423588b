"""Admin logins are throttled: after the failure limit the right password is refused until the cool-off ends."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
RIGHT = "correct horse 42"
WRONG = "Tr0ub4dor&3-wrong"


def login(client, password, username="alice"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def logged_in(client) -> bool:
    return client.get("/admin/").status_code == 200


# Long enough that slow password hashing on a busy machine cannot expire a failure between tries.
@override_settings(AXES_FAILURE_LIMIT=3, AXES_COOLOFF_TIME=timedelta(minutes=5))
def test_wrong_passwords_lock_the_user_out_until_the_cool_off_ends(client, admin_user, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(2):
        assert login(client, WRONG).status_code == 200  # the form again, with its error
    locked = login(client, WRONG)
    assert locked.status_code == 429
    refused = login(client, RIGHT)
    assert refused.status_code == 429
    page = refused.content.decode()
    assert "Too many login attempts: 3 failed logins for" in page
    assert "0:05:00" in page  # the cool-off
    assert not logged_in(client)

    lockouts = [r for r in caplog.records if r.name == "mutt.auth" and r.levelno == logging.WARNING]
    assert len(lockouts) == 1, "one line per lockout, not one per refused try"
    assert "alice" in lockouts[0].getMessage()
    for record in caplog.records:
        assert WRONG not in record.getMessage()
        assert RIGHT not in record.getMessage()
    from axes.models import AccessAttempt, AccessFailureLog  # here: an app of the settings under test

    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.failures_since_start >= 3
    assert WRONG not in attempt.post_data
    assert RIGHT not in attempt.post_data
    assert AccessFailureLog.objects.filter(username="alice", locked_out=True).exists()

    with override_settings(AXES_COOLOFF_TIME=timedelta(seconds=1)):  # a tiny cool-off, then let it pass
        time.sleep(1.2)
        assert login(client, RIGHT).status_code == 302
    assert logged_in(client)


@override_settings(AXES_FAILURE_LIMIT=3)
def test_the_lockout_is_per_user_and_address(client, admin_user):
    get_user_model().objects.create_superuser("bob", password="bob's long password")
    for _ in range(3):
        login(client, WRONG)
    assert login(client, RIGHT).status_code == 429
    assert login(client, "bob's long password", username="bob").status_code == 302


def test_the_attempts_are_visible_in_the_admin(admin_client_alice):
    for url in ("/admin/axes/accessattempt/", "/admin/axes/accessfailurelog/", "/admin/axes/accesslog/"):
        assert admin_client_alice.get(url).status_code == 200, url


def test_api_keys_are_not_throttled_by_login_failures(client, admin_user, api_keys):
    with override_settings(AXES_FAILURE_LIMIT=1):
        login(client, WRONG)
    assert client.get("/api/v2/rules/", HTTP_X_API_KEY=api_keys["read"]).status_code == 200
