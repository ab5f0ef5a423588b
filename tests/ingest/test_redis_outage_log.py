"""While Redis is down, ingest answers every request 503 but writes one "Redis unavailable" line per
outage and process (``core.outage``), not one per refused request, and one line when it is back."""

from __future__ import annotations

import logging

from core import outage
from core.redis import reset_clients
from tests.ingest.helpers import event, post


def outage_lines(caplog, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


def test_an_outage_is_one_line_per_state_change_while_every_request_gets_503(
    client, ingest_key, settings, tmp_path, caplog
):
    outage.REDIS.recovered()  # whatever an earlier test left: this one starts with Redis up
    working_url = settings.REDIS_URL
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    reset_clients()
    caplog.set_level(logging.INFO)
    try:
        refused = [post(client, [event()], key=ingest_key) for _ in range(5)]
    finally:
        settings.REDIS_URL = working_url
        reset_clients()
    assert [r.status_code for r in refused] == [503] * 5
    assert {r["Retry-After"] for r in refused} == {"5"}
    assert {r.json()["detail"] for r in refused} == {
        "The event queue (Redis) is unavailable; nothing was accepted. Retry later."
    }
    down = outage_lines(caplog, "Redis unavailable (")
    assert len(down) == 1, [r.getMessage() for r in down]
    assert (down[0].levelname, down[0].name) == ("WARNING", "mutt.outage")
    assert "ingest answers 503" in down[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"

    caplog.clear()
    assert post(client, [event()], key=ingest_key).status_code == 202
    assert post(client, [event()], key=ingest_key).status_code == 202
    back = outage_lines(caplog, "Redis available again")
    assert len(back) == 1
    assert (back[0].levelname, back[0].getMessage().endswith("(5 failures)")) == ("INFO", True)
    assert not outage.REDIS.down
