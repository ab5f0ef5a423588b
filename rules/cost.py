"""What a regex rule costs: measured on fixed sample texts, for the admin's rule list (ADR-007)."""

from __future__ import annotations

import random
import time

import re2

from rules import regexsets

# Rule costs are measured with a small DFA budget: on a short sample RE2's default budget hides what
# a state-hungry pattern costs on a long message, once its DFA gives up and its NFA runs instead.
_COST_MAX_MEM = 1 << 20
COST_SAMPLE_BYTES = 8 * 1024


def _cost_sample() -> tuple[bytes, ...]:
    """Fixed 8 KiB texts for measuring a rule: log-like text, and runs over small alphabets, which keep
    many DFA states alive for patterns that repeat character classes. Each is searched on its own, so
    a match early in one does not hide the cost of the others."""
    # A fixed seed: the same sample in every process, so costs compare. Not a secret, hence S311.
    rng = random.Random(13)  # noqa: S311
    log = b"%LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down 10.0.0.1 "
    parts = [(log * (COST_SAMPLE_BYTES // len(log) + 1))[:COST_SAMPLE_BYTES]]
    for alphabet in ("ab", "01", "abc", "xyz.-", "abcdefghijklmnopqrstuvwxyz0123456789 "):
        parts.append("".join(rng.choice(alphabet) for _ in range(COST_SAMPLE_BYTES)).encode())
    return tuple(parts)


COST_SAMPLE = _cost_sample()


def regex_cost_seconds(pattern: str, rounds: int = 3) -> float:
    """The slowest search of one 8 KiB sample text with ``pattern`` alone (best of ``rounds`` fresh
    compilations each), in seconds: how a pattern compares with others, not a promise for every message."""
    worst = 0.0
    for part in COST_SAMPLE:
        best = float("inf")
        for _ in range(rounds):
            # Fresh each time: no DFA states left from before.
            regex = re2.compile(pattern, regexsets.options(_COST_MAX_MEM))
            started = time.perf_counter()
            regex.search(part)
            best = min(best, time.perf_counter() - started)
        worst = max(worst, best)
    return worst
