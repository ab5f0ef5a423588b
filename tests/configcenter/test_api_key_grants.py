"""Who may grant which scope: admin only by superusers; others only what their model permissions cover."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from configcenter.models import ApiKey
from configcenter.services import create_api_key
from core.audit import Actor

pytestmark = pytest.mark.django_db

ADD_URL = "admin:configcenter_apikey_add"


def staff_with(*codenames: str):
    user = get_user_model().objects.create_user("carol", password="carol's long password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return get_user_model().objects.get(pk=user.pk)  # a fresh object: no stale permission cache


def add_key(client, scopes: list[str], name: str = "carol-key"):
    return client.post(reverse(ADD_URL), {"name": name, "scopes": scopes, "description": "", "change_reason": "test"})


def test_a_staff_user_who_may_add_keys_cannot_grant_admin(client):
    carol = staff_with("add_apikey", "view_apikey", "change_apikey")
    client.force_login(carol)
    response = add_key(client, ["admin"])
    assert response.status_code == 200
    page = response.content.decode()
    assert "Only a superuser may grant the admin scope" in page
    assert 'id="new-api-key"' not in page
    assert not ApiKey.objects.exists()


def test_read_and_write_need_the_model_permissions_they_reach(client):
    carol = staff_with("add_apikey", "view_apikey", "view_alertrule", "view_devhost", "view_deviceteam")
    client.force_login(carol)
    refused = add_key(client, ["read"])  # no view_dynamicsetting: a read key reads every setting
    assert "configcenter.view_dynamicsetting" in refused.content.decode()
    assert not ApiKey.objects.exists()

    carol.user_permissions.add(Permission.objects.get(codename="view_dynamicsetting"))
    granted = add_key(client, ["read", "ingest"])
    assert 'id="new-api-key"' in granted.content.decode()
    assert sorted(ApiKey.objects.get(name="carol-key").scopes) == ["ingest", "read"]

    refused = add_key(client, ["write"], name="carol-write")  # no add/change/delete of rules
    assert "rules.change_alertrule" in refused.content.decode()
    assert not ApiKey.objects.filter(name="carol-write").exists()


def test_ingest_is_for_anyone_who_may_add_keys(client):
    client.force_login(staff_with("add_apikey", "view_apikey"))
    assert 'id="new-api-key"' in add_key(client, ["ingest"]).content.decode()


def test_only_a_superuser_names_another_user_as_owner(client, admin_user):
    # A key's changes are recorded under its owner: naming a superuser would put them in her name.
    carol = staff_with("add_apikey", "view_apikey")
    client.force_login(carol)
    page = client.post(
        reverse(ADD_URL),
        {"name": "as-alice", "owner": admin_user.pk, "scopes": ["ingest"], "description": "", "change_reason": "x"},
    ).content.decode()
    assert "Only a superuser may create a key owned by another user" in page
    assert not ApiKey.objects.exists()
    with pytest.raises(PermissionDenied, match="owned by another user"):
        create_api_key(actor=Actor.for_user(carol), name="as-alice", scopes=["ingest"], owner=admin_user, reason="x")
    create_api_key(actor=Actor.for_user(carol), name="mine", scopes=["ingest"], owner=carol, reason="x")


def test_a_superuser_may_grant_admin(admin_client_alice):
    assert 'id="new-api-key"' in add_key(admin_client_alice, ["admin"]).content.decode()


def test_the_service_checks_the_actor_too():
    carol = staff_with("add_apikey")
    with pytest.raises(PermissionDenied, match="admin"):
        create_api_key(actor=Actor.for_user(carol), name="sneaky", scopes=["admin"], reason="test")
    assert not ApiKey.objects.exists()
    # The command line (someone with the server's shell and database) is trusted, as before.
    create_api_key(actor=Actor.cli("ops"), name="cli-admin", scopes=["admin"], reason="test")
