from __future__ import annotations

import pytest

from core.redis import key
from rules.flood import dedup_bucket, record_unmatched, template_of


@pytest.mark.parametrize(
    ("message", "template"),
    [
        ("port 12 down", "port <n> down"),
        ("login failed from 10.1.2.3:5000", "login failed from <ip>"),
        ("peer fe80::1 lost", "peer <ip> lost"),
        ("mac 00:1a:2b:3c:4d:5e moved", "mac <mac> moved"),
        ("mac 001a.2b3c.4d5e moved from Gi1/0/1", "mac <mac> moved from Gi<n>/<n>/<n>"),
        ("session 0xdeadbeef closed", "session <hex> closed"),
        ("job 3f2b8c1e-1d2a-4b3c-8d9e-0a1b2c3d4e5f done", "job <uuid> done"),
        ("trace 9f8e7d6c5b4a3f2e1d0c expired", "trace <id> expired"),
        ("session ABCDEF0123456789 ended after 30s", "session <id> ended after <n>s"),
        ("serial FOC1234X5YZ6 seen", "serial FOC<n>X<n>YZ<n> seen"),
    ],
)
def test_messages_reduce_to_templates(message, template):
    assert template_of(message) == template


def test_windows_are_aligned_and_counted_per_host(redis_client):
    events = [("sw1", f"port {i} down") for i in range(3)]
    first = record_unmatched(redis_client, events, threshold=3, window_seconds=60, now=1_000_020.0)
    assert [(f.hostname, f.count, f.window_start) for f in first] == [("sw1", 3, 1_000_020 - 1_000_020 % 60)]
    again = record_unmatched(redis_client, events, threshold=3, window_seconds=60, now=1_000_030.0)
    assert [f.count for f in again] == [6], "same window: the count grows (the alerter sends once per window)"
    assert again[0].alert_id == first[0].alert_id, "one meta-alert id per host and window"
    assert again[0].top_templates == [("port <n> down", 6)]
    # Once the alerter has added the meta-alert to the window's dedup bucket, batches only count.
    redis_client.hset(dedup_bucket(first[0].window_start), first[0].alert_id, "1")
    assert record_unmatched(redis_client, events, threshold=3, window_seconds=60, now=1_000_040.0) == []
    assert int(redis_client.get(key("flood", first[0].window_start, "sw1", "total"))) == 9
    for name in ("total", "templates"):  # set when the window's first events created the keys
        assert 60 < redis_client.ttl(key("flood", first[0].window_start, "sw1", name)) <= 120
    next_window = record_unmatched(redis_client, events, threshold=3, window_seconds=60, now=1_000_080.0)
    assert [f.count for f in next_window] == [3]
    assert next_window[0].alert_id != first[0].alert_id
    assert record_unmatched(redis_client, [("sw2", "x")], threshold=3, window_seconds=60, now=1_000_080.0) == []


def test_one_call_counts_many_hosts_and_proposes_only_those_over_the_threshold(redis_client):
    events = [("sw1", "link flap") for _ in range(4)] + [("sw2", f"crc error {i}") for i in range(2)]
    events += [("sw3", "fan 1 failed"), ("sw3", "fan 2 failed"), ("sw3", "psu ok"), ("sw3", "psu ok")]
    floods = record_unmatched(redis_client, events, threshold=4, window_seconds=60, now=2_000_000.0)
    assert sorted((f.hostname, f.count) for f in floods) == [("sw1", 4), ("sw3", 4)]
    sw3 = next(f for f in floods if f.hostname == "sw3")
    assert sw3.top_templates == [("fan <n> failed", 2), ("psu ok", 2)]
    assert sw3.sample == "fan 1 failed"
    later = record_unmatched(
        redis_client, [("sw2", "crc error 9")] * 2, threshold=4, window_seconds=60, now=2_000_001.0
    )
    assert [(f.hostname, f.count, f.top_templates) for f in later] == [("sw2", 4, [("crc error <n>", 4)])]
