"""Every history view reads a page of audit rows in a fixed number of queries, however long the trail.

Each change in these trails is made by a different person, so a view that fetched each row's user (or
each row's predecessor) would show it as more queries for 30 rows than for 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from configcenter import services as key_services
from configcenter import settings_service
from configcenter.admin import ApiKeyAdmin
from configcenter.models import DynamicSetting
from core.audit import Actor
from rules import services as rule_services
from rules.admin import AlertRuleAdmin
from rules.models import AlertRule, DevHost, DeviceTeam

pytestmark = pytest.mark.django_db

SETTING = "moog_timeout"


def person(number: int) -> Actor:
    user = get_user_model().objects.create_user(f"operator{number}", is_staff=True, is_superuser=True)
    return Actor.for_user(user)


@dataclass(frozen=True)
class Trail:
    """How to create an object with history, change it once more, and name its history pages."""

    create: Callable[[Actor], Any]
    change: Callable[[Any, Actor, int], object]
    admin_url: str
    api_url: Callable[[Any], str] | None = None


TRAILS = {
    "rule": Trail(
        create=lambda actor: rule_services.create(
            AlertRule, actor=actor, name="link", match_type="contains", match_string="down"
        ),
        change=lambda rule, actor, n: rule_services.update(rule, actor=actor, changes={"priority": n}, reason=f"#{n}"),
        admin_url="admin:rules_alertrule_history",
        api_url=lambda rule: f"/api/v2/rules/{rule.pk}/history/",
    ),
    "dev host": Trail(
        create=lambda actor: rule_services.create(DevHost, actor=actor, hostname="lab-sw-01"),
        change=lambda host, actor, n: rule_services.update(
            host, actor=actor, changes={"description": f"rack {n}"}, reason=f"#{n}"
        ),
        admin_url="admin:rules_devhost_history",
        api_url=lambda host: f"/api/v2/dev-hosts/{host.pk}/history/",
    ),
    "device team": Trail(
        create=lambda actor: rule_services.create(DeviceTeam, actor=actor, hostname="core-01", team_name="noc"),
        change=lambda team, actor, n: rule_services.update(
            team, actor=actor, changes={"team_name": f"team-{n}"}, reason=f"#{n}"
        ),
        admin_url="admin:rules_deviceteam_history",
        api_url=lambda team: f"/api/v2/device-teams/{team.pk}/history/",
    ),
    "API key": Trail(
        # Owned by its creator: the owner is a foreign key the admin shows as a user, joined too.
        create=lambda actor: key_services.create_api_key(
            actor=actor, name="feeder", scopes=["ingest"], owner=actor.user, reason="new feed"
        )[0],
        change=lambda api_key, actor, n: key_services.update_api_key(
            actor=actor, api_key=api_key, description=f"feed {n}", reason=f"#{n}"
        ),
        admin_url="admin:configcenter_apikey_history",
    ),
    "runtime setting": Trail(
        create=lambda actor: DynamicSetting.objects.get(key=SETTING),  # registered when the database was set up
        change=lambda _, actor, n: settings_service.set_setting(SETTING, n, actor=actor, reason=f"#{n}"),
        admin_url="admin:configcenter_dynamicsetting_history",
        api_url=lambda _: f"/api/v2/config/{SETTING}/history",
    ),
}


def grow(trail: Trail, obj: Any, rows: range) -> None:
    for n in rows:
        trail.change(obj, person(n), n)


def queries(view: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as captured:
        view()
    return len(captured)


def get_ok(client: Any, url: str) -> Callable[[], Any]:
    def view() -> Any:
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        return response

    return view


def count_for_2_and_30_rows(trail: Trail, view_for: Callable[[Any], Callable[[], Any]]) -> tuple[int, int]:
    obj = trail.create(person(0))
    grow(trail, obj, range(1, 2))
    view = view_for(obj)
    view()  # the first request fills per-process caches (content types, the user model's admin URL)
    short = queries(view)
    grow(trail, obj, range(2, 30))
    return short, queries(view)


@pytest.mark.parametrize("kind", list(TRAILS))
def test_admin_history_page_costs_the_same_for_2_rows_as_for_30(admin_client_alice, kind):
    trail = TRAILS[kind]
    short, long = count_for_2_and_30_rows(
        trail, lambda obj: get_ok(admin_client_alice, reverse(trail.admin_url, args=[obj.pk]))
    )
    assert long == short


@pytest.mark.parametrize("kind", [kind for kind, trail in TRAILS.items() if trail.api_url])
def test_api_history_costs_the_same_for_2_rows_as_for_30(admin_client_alice, kind):
    trail, api_url = TRAILS[kind], TRAILS[kind].api_url
    assert api_url is not None
    short, long = count_for_2_and_30_rows(trail, lambda obj: get_ok(admin_client_alice, api_url(obj)))
    assert long == short


def test_muttctl_config_history_costs_the_same_for_2_rows_as_for_30():
    short, long = count_for_2_and_30_rows(
        TRAILS["runtime setting"],
        lambda _: lambda: call_command("muttctl", "config", "history", SETTING, stdout=StringIO()),
    )
    assert long == short


def test_api_history_page_shows_the_oldest_rows_change_against_the_row_before_the_page(admin_client_alice):
    rule = TRAILS["rule"].create(person(0))
    grow(TRAILS["rule"], rule, range(1, 6))
    page = admin_client_alice.get(f"/api/v2/rules/{rule.pk}/history/?limit=3").json()
    assert page["count"] == 6
    assert [row["actor"] for row in page["results"]] == ["user:operator5", "user:operator4", "user:operator3"]
    assert page["results"][-1]["changes"] == [{"field": "priority", "old": 2, "new": 3}]
    last = admin_client_alice.get(f"/api/v2/rules/{rule.pk}/history/?limit=3&offset=3").json()["results"]
    assert [row["changes"] for row in last] == [
        [{"field": "priority", "old": 1, "new": 2}],
        [{"field": "priority", "old": 100, "new": 1}],
        [],
    ]


def test_admin_history_page_shows_the_changes_of_its_oldest_row_too(admin_client_alice, monkeypatch):
    # simple-history's admin diffed rows only within a page, so each page's oldest row showed no changes.
    monkeypatch.setattr(AlertRuleAdmin, "history_list_per_page", 3)
    rule = TRAILS["rule"].create(person(0))
    grow(TRAILS["rule"], rule, range(1, 6))
    page = admin_client_alice.get(reverse("admin:rules_alertrule_history", args=[rule.pk])).content.decode()
    shown = re.findall(r"<strong>(\w+):</strong>\s*(\S+)\s*&nbsp;&rarr;&nbsp;&nbsp;(\S+)", page)
    assert shown == [("Priority", "4", "5"), ("Priority", "3", "4"), ("Priority", "2", "3")]


def test_api_key_history_page_names_each_rows_user_and_shows_every_rows_change(admin_client_alice, monkeypatch):
    monkeypatch.setattr(ApiKeyAdmin, "history_list_per_page", 3)
    trail = TRAILS["API key"]
    api_key = trail.create(person(0))
    grow(trail, api_key, range(1, 4))
    page = admin_client_alice.get(reverse(trail.admin_url, args=[api_key.pk])).content.decode()
    assert all(f"operator{n}</a>" in page for n in (1, 2, 3))
    shown = re.findall(r"<strong>Description:</strong>(.*?)&nbsp;&rarr;&nbsp;&nbsp;(.*?)</li>", page, re.S)
    assert [(old.strip(), new.strip()) for old, new in shown] == [
        ("feed 2", "feed 3"),
        ("feed 1", "feed 2"),
        ("", "feed 1"),
    ]
