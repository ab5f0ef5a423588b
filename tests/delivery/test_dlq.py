"""The DLQ primitives, the audited services and the operators' admin, against real Redis and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from core import contracts, streams
from core.audit import Actor
from core.context import request_id_scope
from core.redis import key
from delivery import dlq, services
from delivery.models import AppendOnlyError, DlqAction
from rules.alerter import Alerter
from tests.support.dlq_helpers import add_alerter_entry, add_moog_entry, make_alert, stream_payloads
from tests.support.events import make_event

OPERATOR = Actor.cli("ops-test")


@pytest.fixture
def queues(clean_pipeline, redis_client):
    """Empty DLQs and target streams (clean_pipeline) and no replay counts."""

    def clear_counts() -> None:
        for name in redis_client.scan_iter(match=key("replays", "*")):
            redis_client.delete(name)

    clear_counts()
    yield redis_client
    clear_counts()


def replays_of(client, event_id: str) -> int:
    return int(client.get(dlq.replay_count_key(event_id)) or 0)


# --- reading ---------------------------------------------------------------------------------------


def test_entries_are_listed_newest_first_and_filtered_by_reason(queues):
    ids = [add_moog_entry(queues, reason=r)[0] for r in ("retries_exhausted", "http_400", "retries_exhausted")]
    page = dlq.list_entries(queues, "moog")
    assert [e.id for e in page.entries] == ids[::-1]
    assert page.next_before is None
    transient = dlq.list_entries(queues, "moog", reason="retries_exhausted")
    assert [e.id for e in transient.entries] == [ids[2], ids[0]]


def test_pages_continue_below_the_cursor_until_the_last(queues):
    ids = [add_alerter_entry(queues)[0] for _ in range(5)]
    first = dlq.list_entries(queues, "alerter", limit=2)
    second = dlq.list_entries(queues, "alerter", limit=2, before=first.next_before)
    third = dlq.list_entries(queues, "alerter", limit=2, before=second.next_before)
    assert [e.id for e in first.entries + second.entries + third.entries] == ids[::-1]
    assert third.next_before is None


def test_a_reason_filter_pages_through_a_queue_of_other_reasons(queues):
    wanted = add_moog_entry(queues, reason="http_400")[0]
    for _ in range(30):
        add_moog_entry(queues)
    page = dlq.list_entries(queues, "moog", reason="http_400", limit=10, scan_limit=10)
    assert page.entries == []
    assert page.next_before is not None, "a capped scan says where to carry on"
    while page.next_before and not page.entries:
        page = dlq.list_entries(queues, "moog", reason="http_400", limit=10, scan_limit=10, before=page.next_before)
    assert [e.id for e in page.entries] == [wanted]


def test_one_entry_shows_its_fields_and_payload(queues):
    entry_id, alert = add_moog_entry(queues, reason="http_400", status=400, response='{"error": "bad severity"}')
    entry = dlq.get_entry(queues, "moog", entry_id)
    assert (entry.reason, entry.fields["status"], entry.attempts, entry.event_key) == (
        "http_400",
        "400",
        10,
        alert["event_id"],
    )
    assert entry.payload() == alert
    assert '\n  "event_id"' in entry.payload_text()
    assert dlq.get_entry(queues, "moog", "1-1") is None
    assert dlq.get_entry(queues, "moog", "not-an-id") is None


# --- replay, bury, purge ---------------------------------------------------------------------------


def test_replaying_an_alerter_entry_puts_the_event_back_on_the_ingest_stream_unchanged(queues):
    entry_id, event = add_alerter_entry(queues)
    raw = queues.xrange(streams.dlq_stream("alerter"))[0][1][b"e"]
    result = dlq.replay(queues, "alerter", [entry_id])
    assert result.results == {entry_id: "replayed"}
    assert [fields[b"e"] for _, fields in queues.xrange(streams.ingest_stream())] == [raw]
    assert queues.xlen(streams.dlq_stream("alerter")) == 0
    assert replays_of(queues, event["event_id"]) == 1
    assert 29 * 86_400 < queues.ttl(dlq.replay_count_key(event["event_id"])) <= 30 * 86_400


def test_replaying_a_moog_entry_resets_attempts_and_keeps_the_rest(queues):
    entry_id, alert = add_moog_entry(queues)
    dlq.replay(queues, "moog", [entry_id])
    assert stream_payloads(queues, streams.alerts_stream()) == [{**alert, "attempts": 0}]
    assert queues.xlen(streams.dlq_stream("moog")) == 0


def test_the_replay_count_survives_the_event_failing_again(queues):
    alert = make_alert()
    for expected in (1, 2, 3):
        entry_id, _ = add_moog_entry(queues, alert=alert)  # the forwarder dead-letters it again: a new entry
        dlq.replay(queues, "moog", [entry_id])
        assert replays_of(queues, alert["event_id"]) == expected


def test_a_replay_beyond_the_limit_moves_the_entry_to_the_dead_queue_with_every_field(queues):
    alert = make_alert()
    queues.set(dlq.replay_count_key(alert["event_id"]), 3)
    entry_id, _ = add_moog_entry(queues, alert=alert)
    original = {k.decode(): v for k, v in queues.xrange(streams.dlq_stream("moog"))[0][1].items()}
    result = dlq.replay(queues, "moog", [entry_id], max_replays=3)
    assert result.results == {entry_id: "dead"}
    assert queues.xlen(streams.alerts_stream()) == 0
    [(_, dead)] = queues.xrange(streams.dlq_stream("dead"))
    dead = {k.decode(): v for k, v in dead.items()}
    assert {k: dead[k] for k in original} == original
    assert (dead["origin"], dead["replays"]) == (b"moog", b"3")
    assert b"moved_at" in {k.encode() for k in dead}
    assert replays_of(queues, alert["event_id"]) == 3, "moving to dead is not a replay"


def test_dead_entries_replay_to_where_their_origin_queue_replays(queues):
    moog_id, alert = add_moog_entry(queues)
    alerter_id, event = add_alerter_entry(queues)
    dlq.move_to_dead(queues, "moog", [moog_id])
    dlq.move_to_dead(queues, "alerter", [alerter_id])
    dead = dlq.list_entries(queues, "dead").entries
    assert {e.origin for e in dead} == {"moog", "alerter"}
    result = dlq.replay(queues, "dead", [e.id for e in dead])
    assert set(result.results.values()) == {"replayed"}
    assert stream_payloads(queues, streams.alerts_stream()) == [{**alert, "attempts": 0}]
    assert stream_payloads(queues, streams.ingest_stream()) == [event]
    assert queues.xlen(streams.dlq_stream("dead")) == 0


def test_purge_deletes_and_reports_ids_that_are_already_gone(queues):
    keep, _ = add_alerter_entry(queues)
    gone, _ = add_alerter_entry(queues)
    result = dlq.purge(queues, "alerter", [gone, "1-1", "junk"])
    assert result.results == {gone: "purged", "1-1": "missing", "junk": "missing"}
    assert [e.id for e in dlq.list_entries(queues, "alerter").entries] == [keep]


def test_a_moog_entry_without_a_json_payload_is_not_replayed(queues):
    entry_id = queues.xadd(streams.dlq_stream("moog"), {"reason": "malformed", "e": b"not json"}).decode()
    assert dlq.replay(queues, "moog", [entry_id]).results == {entry_id: "invalid"}
    assert queues.xlen(streams.dlq_stream("moog")) == 1


def test_an_entry_the_alerter_dead_lettered_replays_to_ingest(queues, transactional_db):
    broken = make_event()
    del broken["hostname"]
    queues.xadd(streams.ingest_stream(), streams.encode(broken))
    Alerter("test-alerter", client=queues).step(block_ms=10)
    [entry] = dlq.list_entries(queues, "alerter").entries
    assert (entry.reason, entry.event_key) == ("malformed", broken["event_id"])
    dlq.replay(queues, "alerter", [entry.id])
    assert broken in stream_payloads(queues, streams.ingest_stream())


# --- services: audited ---------------------------------------------------------------------------


def test_a_replay_is_audited_with_actor_reason_and_request_id(queues):
    first, _ = add_moog_entry(queues)
    second, _ = add_moog_entry(queues)
    with request_id_scope("req-dlq-1"):
        report = services.replay_entries(
            actor=OPERATOR, queue="moog", entry_ids=[first, second, "1-1"], reason="CHG-7 Moogsoft fixed"
        )
    assert (report.replayed, report.missing) == ([first, second], ["1-1"])
    [row] = DlqAction.objects.all()
    assert (row.actor, row.reason, row.request_id, row.queue, row.action) == (
        "cli:ops-test",
        "CHG-7 Moogsoft fixed",
        "req-dlq-1",
        "moog",
        "replay",
    )
    assert (row.entry_ids, row.count, row.outcome) == ([first, second, "1-1"], 2, "partial")
    assert row.details["missing"] == ["1-1"]


def test_a_reason_is_required_and_nothing_changes_without_one(queues):
    entry_id, _ = add_alerter_entry(queues)
    with pytest.raises(ValueError, match="reason"):
        services.purge_entries(actor=OPERATOR, queue="alerter", entry_ids=[entry_id], reason="  ")
    assert queues.xlen(streams.dlq_stream("alerter")) == 1
    assert not DlqAction.objects.exists()


def test_poison_diverted_during_a_replay_gets_its_own_dead_row(queues):
    alert = make_alert()
    queues.set(dlq.replay_count_key(alert["event_id"]), 2)
    poison, _ = add_moog_entry(queues, alert=alert)
    fine, _ = add_moog_entry(queues)
    report = services.replay_entries(
        actor=Actor.system("remediation"), queue="moog", entry_ids=[poison, fine], reason="auto", max_replays=2
    )
    assert (report.replayed, report.dead) == ([fine], [poison])
    rows = {row.action: row for row in DlqAction.objects.all()}
    assert (rows["replay"].count, rows["replay"].outcome) == (1, "partial")
    assert (rows["dead"].entry_ids, rows["dead"].count, rows["dead"].outcome) == ([poison], 1, "done")
    assert rows["dead"].reason == "replayed more than 2 times: poison"
    assert rows["dead"].details["event_ids"] == {poison: alert["event_id"]}


def test_audit_rows_are_append_only(queues):
    entry_id, _ = add_alerter_entry(queues)
    services.purge_entries(actor=OPERATOR, queue="alerter", entry_ids=[entry_id], reason="junk")
    row = DlqAction.objects.get()
    row.reason = "rewritten"
    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()


# --- admin -----------------------------------------------------------------------------------------


def queues_url(**params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("admin:delivery_dlq_queues") + (f"?{query}" if query else "")


def act_url(queue: str) -> str:
    return reverse("admin:delivery_dlq_act", args=[queue])


def test_the_queue_page_shows_depths_entries_and_filters_by_reason(queues, admin_client_alice):
    transient, _ = add_moog_entry(queues)
    permanent, _ = add_moog_entry(queues, reason="http_400", status=400)
    add_alerter_entry(queues)
    page = admin_client_alice.get(queues_url(queue="moog")).content.decode()
    assert '<span id="depth-moog">2</span>' in page
    assert '<span id="depth-alerter">1</span>' in page
    assert transient in page
    assert permanent in page
    filtered = admin_client_alice.get(queues_url(queue="moog", reason="http_400")).content.decode()
    assert permanent in filtered
    assert transient not in filtered


def test_the_entry_page_shows_payload_error_response_attempts_and_replays(queues, admin_client_alice):
    alert = make_alert(description="Interface <Gi0/1> down")
    queues.set(dlq.replay_count_key(alert["event_id"]), 2)
    entry_id, _ = add_moog_entry(queues, alert=alert, reason="http_400", status=400, response="bad severity")
    page = admin_client_alice.get(reverse("admin:delivery_dlq_entry", args=["moog", entry_id])).content.decode()
    assert '<td id="entry-reason">http_400</td>' in page
    assert '<td id="entry-status">400</td>' in page
    assert "bad severity" in page
    assert '<td id="entry-attempts">10</td>' in page
    assert '<td id="entry-replays">2</td>' in page
    assert f"&quot;event_id&quot;: &quot;{alert['event_id']}&quot;" in page  # indented, escaped JSON
    assert "Interface &lt;Gi0/1&gt; down" in page


def test_the_entry_page_shows_integers_past_64_bits_exactly(queues, admin_client_alice):
    # As ingest writes such an event (extra is kept unchanged): the digits are in the raw payload.
    event = make_event(extra={"counter": 2**64 + 1, "serial": -(2**70) - 3, "ratio": 0.5})
    raw = json.dumps(event).encode()
    entry_id, _ = add_alerter_entry(queues, reason="max_deliveries", event=event, raw=raw)
    entry = dlq.get_entry(queues, "alerter", entry_id)
    text = entry.payload_text()
    assert json.loads(text) == event, "every value as stored"
    assert '\n  "event_id"' in text, "indented"
    assert '"counter": 18446744073709551617' in text
    assert '"serial": -1180591620717411303427' in text
    page = admin_client_alice.get(reverse("admin:delivery_dlq_entry", args=["alerter", entry_id])).content.decode()
    assert "&quot;counter&quot;: 18446744073709551617," in page
    assert "&quot;serial&quot;: -1180591620717411303427," in page
    # Not JSON at all: shown as it is.
    bad_id, _ = add_alerter_entry(queues, reason="malformed", raw=b'{"counter": 18446744073709551617')
    assert dlq.get_entry(queues, "alerter", bad_id).payload_text() == '{"counter": 18446744073709551617'


def test_replay_in_the_admin_asks_for_a_reason_then_replays_and_audits(queues, admin_client_alice, admin_user):
    entry_id, alert = add_moog_entry(queues)
    selection = {"action": "replay", "ids": [entry_id]}
    confirm = admin_client_alice.post(act_url("moog"), selection)
    assert confirm.status_code == 200
    assert 'name="reason"' in confirm.content.decode()
    assert queues.xlen(streams.dlq_stream("moog")) == 1, "nothing happens before the reason is given"
    done = admin_client_alice.post(
        act_url("moog"), {**selection, "apply": "1", "reason": "INC-42 Moogsoft back"}, HTTP_X_REQUEST_ID="req-admin-1",
        follow=True,
    )  # fmt: skip
    assert "Replay on the moog queue: 1 replayed." in done.content.decode()
    assert stream_payloads(queues, streams.alerts_stream()) == [{**alert, "attempts": 0}]
    row = DlqAction.objects.get()
    assert (row.actor, row.user, row.reason, row.request_id, row.action, row.count) == (
        "user:alice",
        admin_user,
        "INC-42 Moogsoft back",
        "req-admin-1",
        "replay",
        1,
    )


def test_an_empty_reason_is_refused_and_nothing_changes(queues, admin_client_alice):
    entry_id, _ = add_alerter_entry(queues)
    again = admin_client_alice.post(
        act_url("alerter"), {"action": "purge", "ids": [entry_id], "apply": "1", "reason": ""}
    )
    assert again.status_code == 200
    assert "This field is required" in again.content.decode()
    assert queues.xlen(streams.dlq_stream("alerter")) == 1
    assert not DlqAction.objects.exists()


def test_purge_in_the_admin_deletes_and_says_which_ids_were_already_gone(queues, admin_client_alice):
    entry_id, _ = add_alerter_entry(queues)
    gone, _ = add_alerter_entry(queues)
    queues.xdel(streams.dlq_stream("alerter"), gone)  # someone else handled it meanwhile
    done = admin_client_alice.post(
        act_url("alerter"), {"action": "purge", "ids": [entry_id, gone], "apply": "1", "reason": "test noise"},
        follow=True,
    )  # fmt: skip
    page = done.content.decode()
    assert done.status_code == 200
    assert "1 purged, 1 missing" in page
    assert f"No longer in the queue (already handled?): {gone}" in page
    assert queues.xlen(streams.dlq_stream("alerter")) == 0
    row = DlqAction.objects.get()
    assert (row.action, row.count, row.outcome, row.details["missing"]) == ("purge", 1, "partial", [gone])


def test_a_vanished_entry_page_redirects_with_a_message(queues, admin_client_alice):
    response = admin_client_alice.get(reverse("admin:delivery_dlq_entry", args=["moog", "1-1"]), follow=True)
    assert "is no longer in the moog queue" in response.content.decode()


def test_move_to_dead_in_the_admin(queues, admin_client_alice):
    entry_id, _ = add_moog_entry(queues, reason="http_400")
    admin_client_alice.post(
        act_url("moog"), {"action": "dead", "ids": [entry_id], "apply": "1", "reason": "keep aside"}
    )
    [dead] = dlq.list_entries(queues, "dead").entries
    assert (dead.origin, dead.reason) == ("moog", "http_400")
    assert DlqAction.objects.get().action == "dead"
    page = admin_client_alice.get(queues_url(queue="dead")).content.decode()
    assert dead.id in page
    assert "<td>moog</td>" in page, "the dead queue shows where an entry came from"
    assert '<option value="dead">' not in page, "dead entries cannot be moved to the dead queue again"


def test_only_staff_allowed_to_manage_the_dlq_see_the_queues(queues, client):
    user = get_user_model().objects.create_user("bob", password="pw-bob-12345", is_staff=True)
    client.force_login(user)
    assert client.get(queues_url()).status_code == 403
    assert (
        client.post(act_url("moog"), {"action": "purge", "ids": ["1-1"], "apply": "1", "reason": "x"}).status_code
        == 403
    )
    user.user_permissions.add(Permission.objects.get(codename="manage_dlq"))
    client.force_login(get_user_model().objects.get(pk=user.pk))  # fresh permission cache
    assert client.get(queues_url()).status_code == 200
    assert client.get(reverse("admin:delivery_dlqaction_changelist")).status_code == 200


def test_the_audit_changelist_is_read_only(queues, admin_client_alice):
    entry_id, _ = add_alerter_entry(queues)
    services.purge_entries(actor=OPERATOR, queue="alerter", entry_ids=[entry_id], reason="cleanup")
    listing = admin_client_alice.get(reverse("admin:delivery_dlqaction_changelist")).content.decode()
    assert "cleanup" in listing
    assert reverse("admin:delivery_dlq_queues") in listing
    assert admin_client_alice.get(reverse("admin:delivery_dlqaction_add")).status_code == 403
    row = DlqAction.objects.get()
    assert (
        admin_client_alice.post(reverse("admin:delivery_dlqaction_delete", args=[row.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert DlqAction.objects.filter(pk=row.pk).exists()
    assert row.entry_ids == [entry_id]


def test_the_queues_page_shows_the_breaker_and_the_retry_schedule(queues, admin_client_alice, redis_client):
    from delivery.breaker import CircuitBreaker
    from delivery.retry import schedule_key

    breaker = CircuitBreaker(redis_client)
    breaker.reset()
    try:
        breaker.record(False, threshold=1)
        redis_client.zadd(schedule_key(), {b'{"event_id": "x"}': 0})
        page = admin_client_alice.get(queues_url()).content.decode()
        assert 'id="breaker-state">open<' in page
        assert 'id="retry-scheduled">1<' in page
    finally:
        breaker.reset()
        redis_client.delete(schedule_key())


def test_a_replayed_alert_keeps_an_integer_past_64_bits_exact(queues):
    big = 2**64 + 1  # orjson would read it as the float 1.8446744073709552e19
    entry_id, _ = add_moog_entry(queues, alert=make_alert(details={"varbinds": {"ifIndex": big}}))
    assert dlq.replay(queues, "moog", [entry_id]).ids("replayed") == [entry_id]
    [(_, fields)] = queues.xrange(streams.alerts_stream())
    assert json.loads(fields[contracts.PAYLOAD_FIELD])["details"] == {"varbinds": {"ifIndex": big}}
