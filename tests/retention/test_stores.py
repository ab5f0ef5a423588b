"""Retention of the DLQ streams and of the configuration history: what goes, what stays, what is recorded."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from core import contracts, streams
from core.audit import Actor
from core.redis import key
from retention import stores
from retention.models import RunOutcome
from retention.service import run_retention
from rules import services as rule_services
from rules.models import DevHost, DeviceTeam
from tests.support.retention_stores import backdate_history, fill_dlq, history_count, stream_ids
from tests.support.waiting import apply_setting

OPS = Actor.cli("retention-tests")
QUEUES = ("alerter", "moog", "pager", "dead")


@pytest.fixture
def dlqs(redis_client, settings):
    """Empty DLQ streams, with a second destination (``pager``) besides Moogsoft."""
    settings.MUTT_DESTINATIONS = ["moog", "pager"]
    names = [streams.dlq_stream(queue) for queue in QUEUES]
    redis_client.delete(*names)
    yield redis_client
    redis_client.delete(*names)


# --- DLQ ------------------------------------------------------------------------------------------


def test_every_dlq_stream_is_a_retention_target(dlqs, settings):
    settings.MUTT_DESTINATIONS = ["moog"]
    assert stores.dlq_queues() == ["alerter", "moog", "dead"]
    # A destination taken out of MUTT_DESTINATIONS leaves its DLQ behind: still bounded.
    fill_dlq(dlqs, "pager", [(60, "http_404")])
    dlqs.set(key("dlq", "notes"), "a plain key under dlq:, not a stream: not a DLQ")
    try:
        assert stores.dlq_queues() == ["alerter", "moog", "pager", "dead"]
    finally:
        dlqs.delete(key("dlq", "notes"))


@pytest.mark.django_db
def test_dlq_entries_older_than_the_retention_go_with_their_count_per_reason(dlqs):
    fill_dlq(dlqs, "alerter", [(45, "shed"), (40, "shed"), (31, "malformed"), (29, "shed"), (1, "malformed")])
    fill_dlq(dlqs, "moog", [(90, "retries_exhausted"), (35, "http_400"), (2, "retries_exhausted")])
    fill_dlq(dlqs, "pager", [(60, "http_404")])
    kept_dead = fill_dlq(dlqs, "dead", [(50, "max_deliveries"), (10, "max_deliveries")], origin="alerter")[1:]

    (run,) = run_retention(OPS, "weekly check", only="dlq")

    assert run.outcome == RunOutcome.DONE
    assert run.rows_deleted == 7
    assert run.details["retention_days"] == 30
    assert run.details["reasons"] == {
        "alerter/max_deliveries": 1, "http_400": 1, "http_404": 1, "malformed": 1, "retries_exhausted": 1, "shed": 2,
    }  # fmt: skip
    assert run.details["streams"]["dlq:alerter"]["reasons"] == {"shed": 2, "malformed": 1}
    assert run.details["streams"]["dlq:pager"]["removed"] == 1
    # The time range removed: the oldest entry (90 days) to the newest removed (31 days), never past the cutoff.
    now = timezone.now()
    oldest, newest = (datetime.fromisoformat(run.details[k]) for k in ("oldest", "newest"))
    assert abs(oldest - (now - timedelta(days=90))) < timedelta(minutes=1)
    assert abs(newest - (now - timedelta(days=31))) < timedelta(minutes=1)
    assert newest < datetime.fromisoformat(run.details["cutoff"])
    # What is newer than 30 days stays, in every stream.
    assert [len(stream_ids(dlqs, q)) for q in QUEUES] == [2, 1, 0, 1]
    assert stream_ids(dlqs, "dead") == kept_dead
    run.refresh_from_db()
    assert run.rows_deleted == 7
    assert run.details["reasons"]["shed"] == 2


@pytest.mark.django_db
def test_a_large_dlq_goes_in_bounded_batches_and_never_an_entry_added_meanwhile(dlqs, monkeypatch):
    monkeypatch.setattr(stores, "DLQ_BATCH", 100)
    old = 2_000
    fill_dlq(dlqs, "moog", [(40 + i / 1000, "retries_exhausted") for i in range(old)])
    added: list[str] = []
    stop = threading.Event()

    def writer() -> None:  # the forwarder dead-lettering alerts while the run deletes
        from core.redis import get_redis

        client = get_redis()
        while not stop.is_set():
            entry_id = client.xadd(streams.dlq_stream("moog"), {"reason": "http_400", "e": b"{}"})
            added.append(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        (run,) = run_retention(OPS, "big queue", only="dlq")
    finally:
        stop.set()
        thread.join()

    assert run.rows_deleted == old
    assert run.details["streams"]["dlq:moog"]["reasons"] == {"retries_exhausted": old}
    assert added
    assert stream_ids(dlqs, "moog") == added


@pytest.mark.django_db
def test_dlq_plan_counts_what_would_go_and_touches_nothing(dlqs):
    fill_dlq(dlqs, "alerter", [(45, "shed"), (40, "malformed"), (3, "shed")])
    fill_dlq(dlqs, "dead", [(100, "retries_exhausted")], origin="moog")
    before = {q: stream_ids(dlqs, q) for q in QUEUES}

    items = stores.DlqPolicy().plan(timezone.now())

    assert [(i.store, i.action, i.rows, i.deletes) for i in items] == [
        ("dlq:alerter", "delete", 2, True),
        ("dead_queue", "delete", 1, True),
    ]
    assert items[0].details["reasons"] == {"malformed": 1, "shed": 1}
    # Two of the stream's three entries: two thirds of what Redis says the stream takes.
    assert items[0].bytes == dlqs.memory_usage(streams.dlq_stream("alerter")) * 2 // 3
    assert items[0].target == streams.dlq_stream("alerter")
    assert items[1].details["reasons"] == {"moog/retries_exhausted": 1}
    assert {q: stream_ids(dlqs, q) for q in QUEUES} == before


@pytest.mark.django_db(transaction=True)
def test_dlq_retention_days_is_read_on_every_run(dlqs):
    fill_dlq(dlqs, contracts.ALERTER_QUEUE, [(40, "shed"), (20, "shed"), (5, "shed")])

    (first,) = run_retention(OPS, "default retention", only="dlq")
    apply_setting("dlq_retention_days", 10, reason="DLQ is noisy; keep ten days")
    (second,) = run_retention(OPS, "after the change", only="dlq")

    assert (first.details["retention_days"], first.rows_deleted) == (30, 1)
    assert (second.details["retention_days"], second.rows_deleted) == (10, 1)
    assert len(stream_ids(dlqs, contracts.ALERTER_QUEUE)) == 1


# --- configuration history ------------------------------------------------------------------------


def test_every_audited_model_has_its_history_in_scope():
    labels = {model.instance_type._meta.label for model in stores.history_models()}
    assert labels >= {"rules.AlertRule", "rules.DevHost", "rules.DeviceTeam", "configcenter.DynamicSetting"}


def _host(name: str) -> DevHost:
    host = rule_services.create(DevHost, actor=OPS, reason="lab", hostname=name)
    rule_services.update(host, actor=OPS, changes={"description": "first"}, reason="describe")
    rule_services.update(host, actor=OPS, changes={"description": "second"}, reason="describe again")
    return host


@pytest.mark.django_db
def test_history_older_than_the_retention_goes_but_each_live_objects_current_row_stays():
    kept_old = _host("old-and-live.lab")  # three rows, all 400 days old
    backdate_history(DevHost, 400, hostname="old-and-live.lab")
    mixed = _host("mixed.lab")  # two old rows, one recent
    backdate_history(DevHost, 500, hostname="mixed.lab", description__in=["", "first"])
    gone = _host("gone.lab")
    rule_services.delete(gone, actor=OPS, reason="decommissioned")
    backdate_history(DevHost, 600, hostname="gone.lab")  # four rows, the deletion included
    team = rule_services.create(DeviceTeam, actor=OPS, reason="owner", hostname="t.lab", team_name="net")
    rule_services.update(team, actor=OPS, changes={"team_name": "noc"}, reason="moved")
    backdate_history(DeviceTeam, 380)

    (run,) = run_retention(OPS, "yearly", only="history")

    assert run.outcome == RunOutcome.DONE
    assert run.details["retention_days"] == 365
    assert run.details["models"]["rules.devhost"]["removed"] == 2 + 2 + 4
    assert run.details["models"]["rules.deviceteam"]["removed"] == 1
    assert run.rows_deleted == 9
    # The newest row of a live object stays whatever its age; a deleted object's trail goes whole.
    assert [h.description for h in DevHost.history.filter(id=kept_old.pk)] == ["second"]
    assert [h.description for h in DevHost.history.filter(id=mixed.pk)] == ["second"]
    assert history_count(DevHost, hostname="gone.lab") == 0
    assert [h.team_name for h in DeviceTeam.history.all()] == ["noc"]
    now = timezone.now()
    oldest = datetime.fromisoformat(run.details["oldest"])
    newest = datetime.fromisoformat(run.details["newest"])
    assert abs(oldest - (now - timedelta(days=600))) < timedelta(minutes=1)
    assert abs(newest - (now - timedelta(days=380))) < timedelta(minutes=1)


@pytest.mark.django_db
def test_history_goes_in_batches(monkeypatch):
    monkeypatch.setattr(stores, "HISTORY_BATCH", 7)
    host = rule_services.create(DevHost, actor=OPS, reason="lab", hostname="busy.lab")
    for n in range(30):
        rule_services.update(host, actor=OPS, changes={"description": f"v{n}"}, reason="churn")
    backdate_history(DevHost, 400, hostname="busy.lab")

    (run,) = run_retention(OPS, "yearly", only="history")

    assert run.rows_deleted == 30  # 31 rows: all but the current one
    assert history_count(DevHost, hostname="busy.lab") == 1


@pytest.mark.django_db
def test_history_plan_counts_what_would_go_and_touches_nothing():
    _host("plan.lab")
    backdate_history(DevHost, 400, hostname="plan.lab")

    items = stores.HistoryPolicy().plan(timezone.now())

    (item,) = [i for i in items if i.store == "history:rules.devhost"]
    assert (item.action, item.rows, item.deletes, item.target) == ("delete", 2, True, "rules_historicaldevhost")
    assert item.bytes is not None
    assert item.bytes > 0
    assert history_count(DevHost, hostname="plan.lab") == 3


@pytest.mark.django_db(transaction=True)
def test_config_audit_retention_days_is_read_on_every_run():
    host = _host("setting.lab")
    backdate_history(DevHost, 100, hostname="setting.lab", description="")
    backdate_history(DevHost, 50, hostname="setting.lab", description="first")

    (first,) = run_retention(OPS, "default retention", only="history")
    apply_setting("config_audit_retention_days", 60, reason="audit asked for two months")
    (second,) = run_retention(OPS, "after the change", only="history")

    assert (first.details["retention_days"], first.rows_deleted) == (365, 0)
    assert first.outcome == RunOutcome.IDLE
    assert second.details["retention_days"] == 60
    assert second.details["models"]["rules.devhost"]["removed"] == 1
    assert [h.description for h in DevHost.history.filter(id=host.pk)] == ["second", "first"]
