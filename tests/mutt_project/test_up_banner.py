"""What `mutt up` prints once it is up: secrets only with --show-credentials, and only on a terminal."""

from __future__ import annotations

import os
import pty
from pathlib import Path

from django.core.management.base import OutputWrapper

from mutt_project.management.commands.mutt import banner

CREDENTIALS = {
    "http_url": "http://127.0.0.1:8000",
    "admin_username": "admin",
    "admin_password": "pw-Zq7s1",
    "api_key": "mutt_admin_k3y",
    "ingest_api_key": "mutt_ingest_k3y",
}
SECRETS = ["pw-Zq7s1", "mutt_admin_k3y", "mutt_ingest_k3y"]
PATH = Path("/srv/mutt/.mutt/credentials.json")


def printed_secrets(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_the_banner_names_the_urls_and_the_credentials_file_but_no_secret():
    text = banner(CREDENTIALS, PATH, show_credentials=False, on_terminal=True)
    assert printed_secrets(text) == []
    assert str(PATH) in text
    assert "http://127.0.0.1:8000/admin/" in text


def test_secrets_are_shown_on_request_on_a_terminal_only():
    primary, secondary = pty.openpty()
    read_end, write_end = os.pipe()
    with os.fdopen(secondary, "w") as terminal, os.fdopen(write_end, "w") as pipe:
        on_terminal, on_pipe = OutputWrapper(terminal).isatty(), OutputWrapper(pipe).isatty()
    os.close(primary)
    os.close(read_end)
    assert (on_terminal, on_pipe) == (True, False)

    assert printed_secrets(banner(CREDENTIALS, PATH, show_credentials=True, on_terminal=on_terminal)) == SECRETS
    refused = banner(CREDENTIALS, PATH, show_credentials=True, on_terminal=on_pipe)
    assert printed_secrets(refused) == []
    assert "not a terminal" in refused
