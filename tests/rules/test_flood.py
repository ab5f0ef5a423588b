from __future__ import annotations

import pytest

from rules.flood import record_unmatched, template_of


@pytest.mark.parametrize(
    ("message", "template"),
    [
        ("port 12 down", "port <n> down"),
        ("login failed from 10.1.2.3:5000", "login failed from <ip>"),
        ("peer fe80::1 lost", "peer <ip> lost"),
        ("mac 00:1a:2b:3c:4d:5e moved", "mac <mac> moved"),
        ("session 0xdeadbeef closed", "session <hex> closed"),
        ("job 3f2b8c1e-1d2a-4b3c-8d9e-0a1b2c3d4e5f done", "job <uuid> done"),
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
    next_window = record_unmatched(redis_client, events, threshold=3, window_seconds=60, now=1_000_080.0)
    assert [f.count for f in next_window] == [3]
    assert next_window[0].alert_id != first[0].alert_id
    assert record_unmatched(redis_client, [("sw2", "x")], threshold=3, window_seconds=60, now=1_000_080.0) == []
