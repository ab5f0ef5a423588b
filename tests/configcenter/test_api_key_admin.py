"""A key created in the admin is shown once, in the response page, and travels in no cookie or session."""

from __future__ import annotations

import re

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse

from configcenter.services import find_active_key

pytestmark = pytest.mark.django_db


def test_a_new_keys_plaintext_is_in_the_page_only(admin_client_alice):
    response = admin_client_alice.post(
        reverse("admin:configcenter_apikey_add"),
        {"name": "rsyslog-dc1", "scopes": ["ingest"], "description": "", "change_reason": "new sender"},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    raw_key = re.search(r'<code id="new-api-key">(mutt_[^<]+)</code>', page).group(1)
    assert find_active_key(raw_key).name == "rsyslog-dc1"

    set_cookies = "\n".join(morsel.OutputString() for morsel in response.cookies.values())
    assert raw_key not in set_cookies
    secret_part = raw_key.rsplit("_", 1)[1]
    assert secret_part not in set_cookies
    session_key = admin_client_alice.cookies["sessionid"].value
    stored = SessionStore(session_key=session_key).load()
    assert raw_key not in repr(stored)
    # The next page does not show it again.
    listing = admin_client_alice.get(reverse("admin:configcenter_apikey_changelist")).content.decode()
    assert raw_key not in listing
    assert "rsyslog-dc1" in listing
