"""Development hosts and device teams: exact host names and glob patterns, mapped to a value.

Plain Python like the engine that uses it. Precedence (ADR-007): an exact name beats every glob; among
globs matching a host the one with the most literal characters wins, then the one given first (the
snapshot gives entries oldest first).
"""

from __future__ import annotations

from collections.abc import Iterable

import re2

from rules import regexsets

# A host pattern with these characters is a glob ("*": any run of characters, "?": one character).
GLOB_CHARS = frozenset("*?")
# A set of globs is tiny next to the rules' sets; this only bounds a pathological one.
_SET_MAX_MEM = 8 << 20


def is_glob(pattern: str) -> bool:
    return not GLOB_CHARS.isdisjoint(pattern)


def glob_specificity(pattern: str) -> int:
    """How many literal characters a glob has: among matching globs the most specific one wins."""
    return sum(char not in GLOB_CHARS for char in pattern)


def _glob_regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re2.escape(c) for c in pattern)


class HostTable:
    """Exact host names and glob patterns mapped to a value; exact beats glob, then the most literal
    characters, then the order given (the snapshot gives entries oldest first)."""

    __slots__ = ("_exact", "_globs", "_set")

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._exact: dict[str, tuple[str, str]] = {}
        globs: list[tuple[int, int, str, str]] = []
        for order, (given, value) in enumerate(entries):
            pattern = given.strip().lower()
            if is_glob(pattern):
                globs.append((-glob_specificity(pattern), order, pattern, value))
            else:
                self._exact.setdefault(pattern, (pattern, value))
        globs.sort()
        self._globs = tuple((pattern, value) for _, _, pattern, value in globs)
        self._set: re2.Set | None = None
        if globs:
            # Index 0 matches every name, so an empty result means the DFA gave up (as in the engine's rule sets).
            self._set = re2.Set.FullMatchSet(regexsets.options(_SET_MAX_MEM))
            self._set.Add("(?s).*")
            for pattern, _value in self._globs:
                self._set.Add("(?s)" + _glob_regex(pattern))
            self._set.Compile()

    def lookup(self, host: str) -> tuple[str, str] | None:
        """(deciding entry, its value) for a lower-case host name, or None."""
        hit = self._exact.get(host)
        if hit is not None or self._set is None:
            return hit
        found = self._set.Match(host.encode("utf-8", "replace"))
        if not found:  # the DFA gave up: try the globs one by one, in precedence order
            found = [0, *(i for i, (p, _) in enumerate(self._globs, 1) if re2.fullmatch(_glob_regex(p), host))]
        best = min((index for index in found if index), default=0)
        return self._globs[best - 1] if best else None
