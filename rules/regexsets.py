"""RE2 for the regex rules: many patterns in a few sets, each searched in one DFA pass.

The rule engine (rules/engine.py) puts regex rules, in rank order, into sets within the caps below and
asks each set which patterns occur in a message; the rule model validates a pattern with
:func:`regex_error` and :func:`regex_program_size`. Plain Python, no Django (the import check holds it).
"""

from __future__ import annotations

import logging

import re2

logger = logging.getLogger("rules.engine")

# Each RE2 set is one lazily built DFA, and a Match() call costs about a microsecond almost
# regardless of set size (measured: 900 and 8,000 realistic patterns cost the same), so few large
# sets beat many small ones. The caps (pattern count, total RE2 program instructions) only bound
# compile time, the DFA's memory and the damage one state-hungry pattern (".*a.*b") can do to
# its set; a set RE2 still refuses within max_mem is halved until it compiles.
SET_MAX_PATTERNS = 2_000
SET_MAX_PROGRAM = 100_000
SET_MAX_MEM = 32 << 20

# Index 0 of every set is the empty pattern, which matches any text. RE2's Python binding returns
# an empty list when the DFA runs out of memory mid-search, so a result without index 0 means "the
# set gave up" (rescan pattern by pattern), never "nothing matched".
_SENTINEL = ""


def error_text(exc: re2.error) -> str:
    """RE2's binding carries the message as bytes; make it readable."""
    detail = exc.args[0] if exc.args else "invalid pattern"
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


def regex_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern`` (readable text), or None when it compiles. Used by model validation."""
    try:
        re2.compile(pattern, options())
    except re2.error as exc:
        return error_text(exc)
    return None


def regex_program_size(pattern: str) -> int:
    """RE2's program size (instructions) of a valid ``pattern``: what a search costs per byte once RE2's
    DFA gives up on a state-hungry pattern and falls back to its NFA (``[ab]*a[ab]{50}[^ab]``)."""
    size: int = compiled(pattern).programsize  # re2 ships no types
    return size


def options(max_mem: int | None = None) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors surface as InvalidRule or a fallback, not on stderr
    if max_mem is not None:
        options.max_mem = max_mem
    return options


def compiled(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, options())


class SingleRegex:
    """Stand-in for an RE2 set holding one pattern (alone, or one RE2 would not put in a set)."""

    __slots__ = ("_regex",)

    def __init__(self, pattern: str) -> None:
        self._regex = compiled(pattern)

    def Match(self, data: bytes) -> list[int]:  # same name and result shape as re2.Set.Match
        # Index 0 plays the sentinel so this never looks like a DFA failure.
        return [0, 1] if self._regex.search(data) else [0]


class RegexChunk:
    """One RE2 set (or single pattern) covering a contiguous run of regex-rule ranks."""

    __slots__ = ("first_rank", "matcher", "patterns", "ranks", "warned")

    def __init__(
        self,
        matcher: re2.Set | SingleRegex,
        patterns: tuple[str, ...],
        ranks: tuple[tuple[int, ...], ...],
    ) -> None:
        self.matcher = matcher
        # Pattern strings, not compiled objects: those cost ~6 KB each and are only needed by
        # the rare rescan below.
        self.patterns = patterns  # set index i + 1 -> pattern
        self.ranks = ranks  # set index -> ranks of the rules using that pattern (index 0: sentinel)
        self.first_rank = min(r for group in ranks for r in group)
        self.warned = False

    def hits(self, data: bytes) -> list[int]:
        """Set indices whose pattern occurs in `data` (always including the sentinel 0)."""
        found = self.matcher.Match(data)
        if found:
            return found
        if not self.warned:  # once per chunk: only pathological patterns get here
            self.warned = True
            logger.warning("RE2 set for ranks from %d ran out of memory; rescanning", self.first_rank)
        return [0, *(i for i, pattern in enumerate(self.patterns, 1) if compiled(pattern).search(data))]


def build_chunk(entries: list[tuple[int, str]]) -> list[RegexChunk]:
    """Compile (rank, pattern) entries into one RE2 set, halving the batch until RE2 accepts it."""
    by_pattern: dict[str, list[int]] = {}
    for rank, pattern in entries:  # rules sharing a pattern share one set slot
        by_pattern.setdefault(pattern, []).append(rank)
    patterns = tuple(by_pattern)
    ranks = ((), *(tuple(group) for group in by_pattern.values()))
    if len(patterns) == 1:
        # A lone pattern is cheaper as a plain regex, and always compiles (it was validated).
        return [RegexChunk(SingleRegex(patterns[0]), patterns, ranks)]
    regex_set = re2.Set.SearchSet(options(SET_MAX_MEM))
    try:
        regex_set.Add(_SENTINEL)
        for pattern in patterns:
            regex_set.Add(pattern)
        regex_set.Compile()
    except re2.error:
        half = len(entries) // 2
        return build_chunk(entries[:half]) + build_chunk(entries[half:])
    return [RegexChunk(regex_set, patterns, ranks)]


def build_regex_chunks(entries: list[tuple[int, str, int]]) -> tuple[RegexChunk, ...]:
    """Split rank-ordered (rank, pattern, program size) entries into sets within the caps."""
    chunks: list[RegexChunk] = []
    batch: list[tuple[int, str]] = []
    program = 0
    for rank, pattern, size in entries:
        if batch and (len(batch) >= SET_MAX_PATTERNS or program + size > SET_MAX_PROGRAM):
            chunks.extend(build_chunk(batch))
            batch, program = [], 0
        batch.append((rank, pattern))
        program += size
    if batch:
        chunks.extend(build_chunk(batch))
    return tuple(chunks)
