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


def login_from(client, password, address, username="alice", forwarded=None):
    extra = {"REMOTE_ADDR": address}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"}, **extra)


@override_settings(MUTT_LOGIN_FAILURE_LIMIT=3, MUTT_LOGIN_USERNAME_FAILURE_LIMIT=0)
def test_another_address_is_not_locked_out_by_the_first(client, admin_user):
    for _ in range(3):
        login_from(client, WRONG, "198.51.100.7")
    assert login_from(client, RIGHT, "198.51.100.7").status_code == 429
    assert login_from(client, RIGHT, "203.0.113.9").status_code == 302


@override_settings(MUTT_LOGIN_FAILURE_LIMIT=3, MUTT_LOGIN_USERNAME_FAILURE_LIMIT=0, MUTT_TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_the_client_address_comes_from_x_forwarded_for(client, admin_user):
    proxy = "10.0.0.2"  # every request reaches MUTT from the proxy
    for _ in range(3):
        login_from(client, WRONG, proxy, forwarded="198.51.100.7")
    assert login_from(client, RIGHT, proxy, forwarded="198.51.100.7").status_code == 429
    # Another client behind the same proxy is not locked out; a forged left-hand entry changes nothing.
    assert login_from(client, RIGHT, proxy, forwarded="198.51.100.7, 203.0.113.9").status_code == 302
    from axes.models import AccessAttempt

    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}


@override_settings(MUTT_LOGIN_FAILURE_LIMIT=3, MUTT_LOGIN_USERNAME_FAILURE_LIMIT=0, MUTT_TRUSTED_PROXY_COUNT=2)
def test_two_trusted_proxies_take_the_second_entry_from_the_right(client, admin_user):
    for _ in range(3):
        login_from(client, WRONG, "10.0.0.2", forwarded="1.1.1.1, 198.51.100.7, 10.0.0.1")
    from axes.models import AccessAttempt

    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}


@override_settings(MUTT_LOGIN_FAILURE_LIMIT=3, MUTT_TRUSTED_PROXY_COUNT=0)
def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(client, admin_user):
    for n in range(3):
        login_from(client, WRONG, "198.51.100.7", forwarded=f"203.0.113.{n}")
    from axes.models import AccessAttempt

    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}


@override_settings(MUTT_LOGIN_FAILURE_LIMIT=3, AXES_COOLOFF_TIME=timedelta(seconds=3))
def test_failures_during_the_lockout_do_not_extend_it(client, admin_user):
    for _ in range(3):
        login(client, WRONG)
    assert login(client, RIGHT).status_code == 429
    # Keep failing while locked out: with the cool-off restarted by each try it would never end.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert login(client, WRONG).status_code == 429
        time.sleep(0.3)
    time.sleep(1.5)
    assert login(client, RIGHT).status_code == 302


@override_settings(
    MUTT_LOGIN_FAILURE_LIMIT=3, MUTT_LOGIN_USERNAME_FAILURE_LIMIT=5, AXES_COOLOFF_TIME=timedelta(minutes=5)
)
def test_a_user_name_has_a_higher_limit_across_all_addresses(client, admin_user, caplog):
    caplog.set_level(logging.INFO)
    for n in range(5):  # an attacker rotating addresses, below the per-address limit each time
        assert login_from(client, WRONG, f"198.51.100.{n}").status_code in (200, 429)
    refused = login_from(client, RIGHT, "203.0.113.50")
    assert refused.status_code == 429
    assert "from all addresses together" in refused.content.decode()
    lockouts = [r for r in caplog.records if r.name == "mutt.auth" and r.levelno == logging.WARNING]
    assert len(lockouts) == 1
    # Another user is not affected.
    get_user_model().objects.create_superuser("bob", password="bob's long password")
    assert login_from(client, "bob's long password", "203.0.113.50", username="bob").status_code == 302
