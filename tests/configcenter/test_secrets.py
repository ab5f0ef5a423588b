"""Secrets: providers in order (Vault, files, environment), refresh, Vault auth and renewal, masking.

Vault is the one fake (tests/support/vault_server.py, a real HTTP server that hvac talks to unmodified);
files, threads, the fork and the clock are real.
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
from pathlib import Path

import pytest

from core import vault
from core.rotation import forget_accepted
from core.secrets import (
    Credential,
    UnknownSecret,
    get_credential,
    get_secret,
    mask,
    refresh_secrets,
    reset_secrets,
    secret_status,
)
from tests.support.vault_server import FakeVault
from tests.support.waiting import wait_for

# Values that cannot appear by accident in a fingerprint, a path or a log line.
OLD = "old-Pässword-31x!"
NEW = "new-Pässword-72q!"
VAULT_VALUE = "vault-Sécret-55z!"
ALL_VALUES = (OLD, NEW, VAULT_VALUE)


@pytest.fixture(autouse=True)
def fresh_secrets(settings):
    settings.MUTT_SECRETS_ENV = {}
    settings.VAULT_ADDR = ""
    reset_secrets()
    forget_accepted()
    yield
    reset_secrets()
    forget_accepted()


@pytest.fixture
def fake_vault():
    with FakeVault() as server:
        yield server


@pytest.fixture
def vault_with_token(settings, fake_vault):
    """Token auth against the fake Vault, with REDIS_PASSWORD stored as current/next."""
    fake_vault.put_secret("mutt/redis_password", {"current": VAULT_VALUE, "next": NEW})
    settings.VAULT_ADDR = fake_vault.url
    settings.VAULT_AUTH_METHOD = "token"
    settings.VAULT_TOKEN = fake_vault.issue_token(ttl=0)
    return fake_vault


@pytest.fixture
def approle(settings, fake_vault, tmp_path):
    """AppRole auth against the fake Vault; returns a function that sets the role's token TTL."""
    secret_id_file = tmp_path / "secret-id"
    secret_id_file.write_text("s-id-123\n")
    settings.VAULT_ADDR = fake_vault.url
    settings.VAULT_AUTH_METHOD = "approle"
    settings.VAULT_ROLE_ID = "mutt-role"
    settings.VAULT_SECRET_ID_FILE = str(secret_id_file)
    fake_vault.put_secret("mutt/redis_password", {"current": VAULT_VALUE})

    def configure(*, ttl: float = 0, renewable: bool = True) -> FakeVault:
        fake_vault.add_approle("mutt-role", "s-id-123", ttl=ttl, renewable=renewable)
        return fake_vault

    return configure


def write(path: Path, text: str) -> str:
    """Replace a file atomically, as a secrets volume does, and return its path."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)
    return str(path)


# --- names, environment, files --------------------------------------------------------------------


def test_unknown_names_are_refused_without_echoing_anything_else():
    for call in (get_credential, get_secret, refresh_secrets):
        with pytest.raises(UnknownSecret, match="NOT_A_SECRET"):
            call("NOT_A_SECRET")


def test_a_secret_no_provider_has_is_not_set():
    credential = get_credential("MOOG_API_KEY")
    assert credential == Credential("MOOG_API_KEY", None, None, "none")
    assert credential.candidates() == []
    assert get_secret("MOOG_API_KEY") is None


def test_environment_gives_current_and_next_and_plain_name_means_current(settings):
    settings.MUTT_SECRETS_ENV = {
        "MOOG_API_KEY": OLD,
        "NOTIFY_WEBHOOK_TOKEN_CURRENT": OLD,
        "NOTIFY_WEBHOOK_TOKEN_NEXT": NEW,
    }
    moog = get_credential("MOOG_API_KEY")
    assert (moog.current, moog.next, moog.source) == (OLD, None, "env")
    webhook = get_credential("NOTIFY_WEBHOOK_TOKEN")
    assert webhook.candidates() == [OLD, NEW]
    assert get_secret("NOTIFY_WEBHOOK_TOKEN") == OLD


def test_next_alone_is_used_and_duplicates_are_tried_once(settings):
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_NEXT": NEW, "REDIS_PASSWORD_CURRENT": OLD, "REDIS_PASSWORD_NEXT": OLD}
    assert get_secret("MOOG_API_KEY") == NEW
    assert get_credential("REDIS_PASSWORD").candidates() == [OLD]


def test_files_win_over_the_environment_and_are_read_again_on_refresh(settings, tmp_path):
    current = write(tmp_path / "current", OLD + "\n")
    settings.MUTT_SECRETS_ENV = {
        "REDIS_PASSWORD": "from-the-environment",
        "REDIS_PASSWORD_CURRENT_FILE": current,
        "REDIS_PASSWORD_NEXT_FILE": write(tmp_path / "next", NEW),
        "DATABASE_PASSWORD_FILE": write(tmp_path / "db", OLD),
    }
    credential = get_credential("REDIS_PASSWORD")
    assert (credential.current, credential.next, credential.source) == (OLD, NEW, "file")
    assert get_credential("DATABASE_PASSWORD").current == OLD, "NAME_FILE holds the current value"

    # Promotion: NEW becomes current, next is emptied.
    write(tmp_path / "current", NEW)
    write(tmp_path / "next", "")
    assert get_credential("REDIS_PASSWORD").current == OLD, "cached until the refresh interval or a refresh"
    refresh_secrets("REDIS_PASSWORD")
    credential = get_credential("REDIS_PASSWORD")
    assert (credential.current, credential.next, credential.source) == (NEW, None, "file")


def test_files_are_read_again_once_the_refresh_interval_has_passed(settings, tmp_path):
    settings.SECRET_REFRESH_SECONDS = 1
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_FILE": write(tmp_path / "moog", OLD)}
    assert get_secret("MOOG_API_KEY") == OLD
    write(tmp_path / "moog", NEW)
    assert wait_for(lambda: get_secret("MOOG_API_KEY") == NEW, timeout=3)


def test_an_unreadable_file_falls_back_to_the_environment_and_says_which_file(settings, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mutt")
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_FILE": str(tmp_path / "missing"), "MOOG_API_KEY": OLD}
    credential = get_credential("MOOG_API_KEY")
    assert (credential.current, credential.source) == (OLD, "env")
    assert "current file of secret MOOG_API_KEY cannot be read" in caplog.text


def test_concurrent_first_reads_ask_vault_once(vault_with_token):
    barrier = threading.Barrier(16)
    seen: list[str | None] = []

    def read() -> None:
        barrier.wait()
        seen.append(get_secret("REDIS_PASSWORD"))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [VAULT_VALUE] * 16
    assert len(vault_with_token.calls_to("/data/mutt/redis_password")) == 1


# --- Vault ----------------------------------------------------------------------------------------------


def test_vault_comes_first_and_a_secret_it_lacks_comes_from_files_or_environment(settings, vault_with_token, tmp_path):
    vault_with_token.put_secret("mutt/moog_api_key", {"value": VAULT_VALUE})
    settings.MUTT_SECRETS_ENV = {
        "REDIS_PASSWORD_FILE": write(tmp_path / "redis", OLD),
        "DATABASE_PASSWORD_FILE": write(tmp_path / "db", OLD),
        "NOTIFY_WEBHOOK_TOKEN": NEW,
    }
    redis_password = get_credential("REDIS_PASSWORD")
    assert (redis_password.current, redis_password.next, redis_password.source) == (VAULT_VALUE, NEW, "vault")
    moog = get_credential("MOOG_API_KEY")
    assert (moog.current, moog.next, moog.source) == (VAULT_VALUE, None, "vault"), "value means current"
    assert get_credential("DATABASE_PASSWORD").source == "file"
    assert get_credential("NOTIFY_WEBHOOK_TOKEN").source == "env"
    reads = vault_with_token.calls_to("/v1/secret/data/mutt/")
    assert {call.path for call in reads} == {
        f"/v1/secret/data/mutt/{name}"
        for name in ("redis_password", "moog_api_key", "database_password", "notify_webhook_token")
    }
    assert all(call.token == settings.VAULT_TOKEN for call in reads)


def test_mount_path_and_namespace_come_from_settings(settings, vault_with_token):
    settings.VAULT_KV_MOUNT = "kv"
    settings.VAULT_SECRET_PATH = "teams/mutt"
    settings.VAULT_NAMESPACE = "ops"
    vault_with_token.put_secret("teams/mutt/redis_password", {"current": NEW}, mount="kv")
    assert get_secret("REDIS_PASSWORD") == NEW
    (read,) = vault_with_token.calls_to("/v1/kv/data/teams/mutt/redis_password")
    assert read.namespace == "ops"


def test_a_changed_vault_secret_is_seen_after_a_refresh(vault_with_token):
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE
    vault_with_token.put_secret("mutt/redis_password", {"current": NEW})
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE, "cached"
    refresh_secrets()
    credential = get_credential("REDIS_PASSWORD")
    assert (credential.current, credential.next) == (NEW, None)


def test_unreachable_vault_keeps_serving_the_last_value_it_gave(settings, vault_with_token, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings.MUTT_SECRETS_ENV = {"REDIS_PASSWORD_FILE": write(tmp_path / "redis", OLD)}
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE

    vault_with_token.failing = True  # sealed: 503
    refresh_secrets("REDIS_PASSWORD")
    assert get_credential("REDIS_PASSWORD").source == "vault"
    vault_with_token.stop()  # gone: connection refused
    refresh_secrets("REDIS_PASSWORD")
    credential = get_credential("REDIS_PASSWORD")
    assert (credential.current, credential.next, credential.source) == (VAULT_VALUE, NEW, "vault")
    (row,) = [row for row in secret_status() if row["name"] == "REDIS_PASSWORD"]
    assert row["stale"] is True
    assert "Vault could not be read for secret REDIS_PASSWORD (VaultDown)" in caplog.text
    assert "(ConnectionError); serving the last value read from Vault" in caplog.text
    assert not any(value in caplog.text for value in ALL_VALUES)


def test_vault_that_never_answered_falls_back_to_files(settings, fake_vault, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    settings.VAULT_ADDR = fake_vault.url
    settings.VAULT_TOKEN = "hvs.revoked-or-wrong"
    settings.MUTT_SECRETS_ENV = {"REDIS_PASSWORD_FILE": write(tmp_path / "redis", OLD)}
    credential = get_credential("REDIS_PASSWORD")
    assert (credential.current, credential.source) == (OLD, "file")
    assert "(Forbidden); falling back to files and environment" in caplog.text
    assert "hvs.revoked-or-wrong" not in caplog.text


def test_approle_logs_in_with_the_secret_id_file_and_reads_with_the_token_it_got(approle):
    server = approle(ttl=0)
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE
    assert len(server.calls_to("/v1/auth/approle/login", status=200)) == 1
    (read,) = server.calls_to("/data/mutt/redis_password")
    assert read.token in server.tokens_issued_by_login()
    assert vault.state()["logins"] == 1


def test_the_token_is_renewed_before_it_expires(settings, fake_vault):
    fake_vault.put_secret("mutt/redis_password", {"current": VAULT_VALUE})
    settings.VAULT_ADDR = fake_vault.url
    settings.VAULT_TOKEN = fake_vault.issue_token(ttl=2, renewable=True)
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE
    token = fake_vault.tokens[settings.VAULT_TOKEN]
    # Two renewals take about 3 s; a loaded CI machine once saw only one within 6 s.
    assert wait_for(lambda: len(token.renewals) >= 2, timeout=15)

    # Each renewal came while the token was still valid: before issue + TTL, then before the
    # previous renewal + TTL.
    expiries = [token.issued_at + token.ttl] + [renewed + token.ttl for renewed in token.renewals]
    for renewed, expiry in zip(token.renewals, expiries, strict=False):
        assert renewed < expiry
    refresh_secrets("REDIS_PASSWORD")
    assert get_credential("REDIS_PASSWORD").source == "vault", "the original token still works"
    assert vault.state()["renewals"] >= 2


def test_approle_logs_in_again_when_renewal_is_refused(approle):
    server = approle(ttl=2)
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE
    server.revoke_all()
    assert wait_for(lambda: len(server.calls_to("/v1/auth/approle/login", status=200)) == 2, timeout=5)
    assert server.calls_to("/v1/auth/token/renew-self", status=403), "renewal was tried and refused"

    server.put_secret("mutt/redis_password", {"current": NEW})
    refresh_secrets("REDIS_PASSWORD")
    assert get_credential("REDIS_PASSWORD").current == NEW, "the new token reads"


def test_approle_logs_in_again_before_a_non_renewable_token_expires(approle):
    server = approle(ttl=2, renewable=False)
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE
    first_token = server.tokens[server.tokens_issued_by_login()[0]]
    assert wait_for(lambda: len(server.calls_to("/v1/auth/approle/login", status=200)) == 2, timeout=5)
    second_login = server.calls_to("/v1/auth/approle/login", status=200)[1]
    assert first_token.expires_at is not None
    assert second_login.at < first_token.expires_at
    assert not server.calls_to("/v1/auth/token/renew-self"), "a non-renewable token is not renewed"


def test_a_read_refused_between_renewals_logs_in_again_and_retries(approle):
    server = approle(ttl=0)
    assert get_secret("REDIS_PASSWORD") == VAULT_VALUE
    server.revoke_all()
    server.put_secret("mutt/redis_password", {"current": NEW})
    refresh_secrets("REDIS_PASSWORD")
    assert get_secret("REDIS_PASSWORD") == NEW
    assert vault.state()["logins"] == 2


def test_the_renewal_thread_stops_on_reset_and_starts_again_lazily(vault_with_token):
    assert vault.state()["renewal_alive"] is False, "nothing runs before the first read"
    get_secret("REDIS_PASSWORD")
    assert vault.state()["renewal_alive"] is True
    reset_secrets()
    assert vault.state()["renewal_alive"] is False
    assert not [thread for thread in threading.enumerate() if thread.name == "mutt-vault-renewal"]
    get_secret("REDIS_PASSWORD")
    assert vault.state()["renewal_alive"] is True


def test_a_forked_child_gets_its_own_client_and_renewal_thread(approle):
    server = approle(ttl=30)
    get_secret("REDIS_PASSWORD")
    parent = vault.state()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any pytest machinery
        try:
            refresh_secrets("REDIS_PASSWORD")
            report = {**vault.state(), "own_pid": os.getpid(), "secret_ok": get_secret("REDIS_PASSWORD") == VAULT_VALUE}
            os.write(writer, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(writer)
    try:
        ready, _, _ = select.select([reader], [], [], 20)
        assert ready, "the child did not answer"
        child = json.loads(os.read(reader, 65536))
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
    assert child["pid"] == child["own_pid"] != parent["pid"]
    assert child["renewal_alive"] is True
    assert child["secret_ok"] is True
    assert len(server.calls_to("/v1/auth/approle/login", status=200)) == 2, "the child logged in itself"
    assert vault.state()["pid"] == os.getpid()
    assert vault.state()["renewal_alive"] is True


# --- masking --------------------------------------------------------------------------------------------


def test_mask_shows_a_fingerprint_never_the_value():
    shown = mask(OLD)
    assert shown.startswith("set (hmac:")
    assert shown.endswith(")")
    assert len(shown) == len("set (hmac:12345678)")
    assert OLD not in shown
    assert mask(OLD) == mask(OLD) != mask(NEW), "operators can tell values apart"
    assert mask(None) == mask("") == "not set"


def test_status_lists_every_secret_with_fingerprints_only(settings, vault_with_token, tmp_path):
    settings.MUTT_SECRETS_ENV = {"DATABASE_PASSWORD_CURRENT_FILE": write(tmp_path / "db", OLD)}
    rows = {row["name"]: row for row in secret_status()}
    assert list(rows) == settings.MUTT_SECRET_NAMES
    assert rows["REDIS_PASSWORD"] == {
        "name": "REDIS_PASSWORD",
        "source": "vault",
        "has_current": True,
        "has_next": True,
        "current": mask(VAULT_VALUE),
        "next": mask(NEW),
        "stale": False,
    }
    assert rows["DATABASE_PASSWORD"]["source"] == "file"
    assert rows["MOOG_API_KEY"]["current"] == "not set"
    dumped = json.dumps(rows)
    assert not any(value in dumped for value in ALL_VALUES)


def test_values_appear_in_no_repr_and_no_log(settings, vault_with_token, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings.MUTT_SECRETS_ENV = {"MOOG_API_KEY_CURRENT": OLD, "MOOG_API_KEY_NEXT": NEW}
    credential = get_credential("REDIS_PASSWORD")
    assert VAULT_VALUE not in repr(credential)
    assert NEW not in str(get_credential("MOOG_API_KEY"))
    vault_with_token.failing = True
    refresh_secrets()
    vault_with_token.stop()
    refresh_secrets()
    assert "REDIS_PASSWORD" in caplog.text
    assert not any(value in caplog.text for value in ALL_VALUES)
