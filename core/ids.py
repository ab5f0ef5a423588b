"""Time-ordered ids: UUID version 7 (RFC 9562), which Python 3.11's ``uuid`` lacks.

Event ids and request ids (which ingest stores as each event's correlation id) are both indexed in the
audit log; ids that grow with time are added at the right-hand end of those indexes instead of at a
random page, which makes each audit row cheaper to write and keeps the indexes compact.

Layout: 48 bits of Unix time in milliseconds, version 7, 12 bits of counter, the RFC variant, and
62 random bits. Within one millisecond the counter increases (RFC 9562 §6.2, method 1), so ids from
one process sort in the order they were made; ids from different processes sort by millisecond.
"""

from __future__ import annotations

import secrets
import threading
import time

_COUNTER_BITS = 12
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
# A new millisecond starts the counter at a random value below half its range, leaving at least 2048
# increments before it runs out within that millisecond.
_COUNTER_SEED_BITS = _COUNTER_BITS - 1


class _Uuid7Generator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self) -> str:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = secrets.randbits(_COUNTER_SEED_BITS)
            else:
                # Same millisecond, or the clock stepped back: keep counting on the last one so ids
                # stay ordered; when the counter is spent, borrow the next millisecond.
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = secrets.randbits(_COUNTER_SEED_BITS)
            ms, counter = self._last_ms, self._counter
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | secrets.randbits(62)
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_generator = _Uuid7Generator()


def uuid7() -> str:
    """A new UUID v7 as a lower-case string, later than every id this process made before."""
    return _generator()


def uuid7_hex() -> str:
    """A new UUID v7 as 32 lower-case hex digits (no hyphens): the shape of request ids."""
    return _generator().replace("-", "")
