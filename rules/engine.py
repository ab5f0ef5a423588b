"""Compiled rule matcher: decides which alert rule, handling and team apply to an event.

`RuleSet.compile()` turns plain `RuleSpec` values into an immutable snapshot that answers
`match()` with cost that grows slowly with the number of rules:

- contains rules share one Aho-Corasick automaton over case-folded strings,
- regex rules share a few RE2 sets (one DFA pass per set finds every matching pattern),
- oid_prefix rules sit in a dict looked up once per prefix of the event OID,
- development hosts and device teams are exact names (a dict) or glob patterns (one RE2 set).

An empty message is a message like any other (ADR-007): regex rules are tried on it, so ``^$``
catches a trap sent without text; a contains rule never matches it (its text is never empty).
Rules see at most ``rule_max_message_bytes`` (a runtime setting) of a message: both callers, the
alerter and the rule tester, cut it with `clip_message()`.

Every rule gets a rank (its position in priority order) so the winner is simply the lowest
matching rank. This module is plain Python on purpose: the alerter worker and the admin rule
tester both use it, and neither should need Django to match an event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick
import re2

from core.contracts import (
    CONTAINS,
    DEV,
    HANDLINGS,
    MATCH_TYPES,
    OID_PREFIX,
    PAGE_AND_TICKET,
    PROD,
    REGEX,
    TICKET_ONLY,
    UNHANDLED,
)
from rules import regexsets
from rules.hosts import HostTable
from rules.signature import DEFAULT_FIELDS as DEFAULT_SIGNATURE_FIELDS

# Hosts whose environment and team were worked out, per snapshot; cleared when full, so a flood of
# distinct names cannot grow it without bound.
_HOST_CACHE_MAX = 65_536

# Moogsoft severity of an alert whose rule names none, from the event's syslog severity; any other
# syslog severity (6, 7, or none at all) gives DEFAULT_ALERT_SEVERITY. Keyed by int | None so a missing
# severity is looked up as it is, without a test on the hot path.
SEVERITY_FROM_SYSLOG: dict[int | None, str] = {
    0: "critical",
    1: "critical",
    2: "critical",
    3: "major",
    4: "warning",
    5: "minor",
}
DEFAULT_ALERT_SEVERITY = "indeterminate"
SEVERITY_DEFAULT_TEXT = (
    "taken from the event's syslog severity (0-2 critical, 3 major, 4 warning, 5 minor, "
    "anything else or none: indeterminate)"
)


class InvalidRule(ValueError):
    """A rule the engine cannot compile; names the rule and the offending field."""

    rule_id: int
    field: str
    message: str

    def __init__(self, rule_id: int, field: str, message: str) -> None:
        super().__init__(f"rule {rule_id}: {field}: {message}")
        self.rule_id = rule_id
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One active alert rule, as the engine sees it (no Django model involved)."""

    id: int
    priority: int
    match_type: str
    match_string: str = ""
    trap_oid: str = ""
    syslog_severity: int | None = None
    prod_handling: str = PAGE_AND_TICKET
    dev_handling: str = TICKET_ONLY
    team_assignment: str = ""
    severity: str = ""
    description: str = ""
    name: str = ""
    signature_fields: tuple[str, ...] = DEFAULT_SIGNATURE_FIELDS  # see rules/signature.py


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Outcome of matching one event: environment, winning rule, handling and team."""

    environment: str
    rule: RuleSpec | None
    handling: str
    team: str
    matches: tuple[RuleSpec, ...] = ()
    dev_entry: str = ""  # the development host entry (name or glob) that made the event dev, if any
    team_entry: str = ""  # the device team entry the team came from, if the team came from one


def alert_severity(rule_severity: str, syslog_severity: int | None) -> str:
    """The Moogsoft severity of an alert: the rule's, else derived from the event's syslog severity."""
    return rule_severity or SEVERITY_FROM_SYSLOG.get(syslog_severity, DEFAULT_ALERT_SEVERITY)


def clip_message(message: str, max_bytes: int) -> str:
    """The part of ``message`` that rules see: at most ``max_bytes`` of UTF-8, cut at a character boundary.

    Cheap for the usual short message: a character is at most 4 bytes, so no encoding is needed below
    a quarter of the limit.
    """
    if len(message) * 4 <= max_bytes:
        return message
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return message
    end = max_bytes
    while end and data[end] & 0xC0 == 0x80:  # a continuation byte: the character started before `end`
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass")


def normalise_oid(oid: str) -> str:
    """Strip whitespace and one leading dot: " .1.3.6.1" -> "1.3.6.1"."""
    oid = oid.strip()
    return oid[1:] if oid[:1] == "." else oid


def _pick(ranks: tuple[int, ...], best: int, wanted: Sequence[int | None], severity: int | None) -> int:
    """Lowest rank in `ranks` (sorted ascending) that beats `best` and passes its severity filter."""
    for rank in ranks:
        if rank >= best:
            break
        want = wanted[rank]
        if want is None or want == severity:
            return rank
    return best


def _program_size(rule: RuleSpec) -> int:
    """Compile the rule's pattern alone: raises InvalidRule if RE2 rejects it, else its size."""
    try:
        size: int = regexsets.compiled(rule.match_string).programsize  # re2 ships no types
        return size
    except re2.error as exc:
        raise InvalidRule(rule.id, "match_string", f"invalid RE2 pattern: {regexsets.error_text(exc)}") from exc


def _validate(rule: RuleSpec) -> None:
    """Reject rules the engine could only silently ignore or misapply."""
    if rule.match_type not in MATCH_TYPES:
        raise InvalidRule(rule.id, "match_type", f"unknown match type {rule.match_type!r}")
    for field in ("prod_handling", "dev_handling"):
        if getattr(rule, field) not in HANDLINGS:
            raise InvalidRule(rule.id, field, f"unknown handling {getattr(rule, field)!r}")
    sev = rule.syslog_severity
    if sev is not None and (isinstance(sev, bool) or not isinstance(sev, int) or not 0 <= sev <= 7):
        raise InvalidRule(rule.id, "syslog_severity", f"must be 0-7 or empty, not {sev!r}")
    if rule.match_type == OID_PREFIX:
        parts = normalise_oid(rule.trap_oid).split(".")
        if not all(part.isascii() and part.isdigit() for part in parts):
            raise InvalidRule(rule.id, "trap_oid", f"not a dotted numeric OID: {rule.trap_oid!r}")
    elif not rule.match_string:
        raise InvalidRule(rule.id, "match_string", f"empty {rule.match_type} pattern would match everything")


class RuleSet:
    """Immutable compiled snapshot of the active rules plus the host facts matching needs."""

    __slots__ = (
        "_automaton",
        "_compiled_at",
        "_dev_hosts",
        "_device_teams",
        "_host_cache",
        "_no_rule",
        "_oid_max_len",
        "_oids",
        "_regex_chunks",
        "_rules",
        "_version",
        "_wanted_severity",
    )

    def __init__(
        self,
        *,
        rules: tuple[RuleSpec, ...],
        automaton: ahocorasick.Automaton | None,
        regex_chunks: tuple[regexsets.RegexChunk, ...],
        oids: dict[str, tuple[int, ...]],
        dev_hosts: HostTable,
        device_teams: HostTable,
        version: str,
    ) -> None:
        """Internal: use `RuleSet.compile()` or `RuleSet.empty()`."""
        self._rules = rules
        self._wanted_severity = tuple(rule.syslog_severity for rule in rules)
        self._no_rule = len(rules)  # a rank no rule has: "nothing matched yet"
        self._automaton = automaton
        self._regex_chunks = regex_chunks
        self._oids = oids
        self._oid_max_len = max(map(len, oids), default=0)
        self._dev_hosts = dev_hosts
        self._device_teams = device_teams
        self._host_cache: dict[str, tuple[tuple[str, str] | None, tuple[str, str] | None]] = {}
        self._version = version
        self._compiled_at = time.time()

    @classmethod
    def compile(
        cls,
        rules: Iterable[RuleSpec],
        dev_hosts: Iterable[str] = (),
        device_teams: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        version: str = "",
    ) -> RuleSet:
        """Validate and compile `rules`; raises InvalidRule for the first rule that cannot be used.

        Development hosts and device teams are exact names or globs; among globs matching a host the
        one with the most literal characters wins, then the one given first (oldest).
        """
        ordered = sorted(rules, key=lambda rule: (rule.priority, rule.id))
        seen: set[int] = set()
        words: dict[str, list[int]] = {}
        oids: dict[str, list[int]] = {}
        regexes: list[tuple[int, str, int]] = []
        for rank, rule in enumerate(ordered):
            if rule.id in seen:
                raise InvalidRule(rule.id, "id", "duplicate rule id")
            seen.add(rule.id)
            _validate(rule)
            if rule.match_type == CONTAINS:
                words.setdefault(rule.match_string.casefold(), []).append(rank)
            elif rule.match_type == REGEX:
                regexes.append((rank, rule.match_string, _program_size(rule)))
            else:
                oids.setdefault(normalise_oid(rule.trap_oid), []).append(rank)

        automaton = None
        if words:
            automaton = ahocorasick.Automaton()
            for word, ranks in words.items():
                automaton.add_word(word, tuple(ranks))  # ranks ascend: enumerate order
            automaton.make_automaton()

        return cls(
            rules=tuple(ordered),
            automaton=automaton,
            regex_chunks=regexsets.build_regex_chunks(regexes),
            oids={oid: tuple(ranks) for oid, ranks in oids.items()},
            dev_hosts=HostTable((host, DEV) for host in dev_hosts),
            device_teams=HostTable(device_teams.items() if isinstance(device_teams, Mapping) else (device_teams or ())),
            version=version,
        )

    @classmethod
    def empty(cls) -> RuleSet:
        """A rule set that matches nothing (before the first snapshot is loaded)."""
        return cls.compile(())

    def __repr__(self) -> str:
        return f"<RuleSet version={self._version!r} rules={len(self._rules)} sets={len(self._regex_chunks)}>"

    @property
    def version(self) -> str:
        return self._version

    @property
    def compiled_at(self) -> float:
        """Unix time of compilation."""
        return self._compiled_at

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    @property
    def rules(self) -> tuple[RuleSpec, ...]:
        """The compiled rules in priority order (winner-first order used by `match`)."""
        return self._rules

    def environment_of(self, hostname: str) -> str:
        """Return "dev" when a development host entry (name or glob) matches the host, else "prod"."""
        return DEV if self._host_facts(hostname.lower())[0] else PROD

    def team_of(self, hostname: str) -> str:
        """Return the device team of the host, or ""."""
        team = self._host_facts(hostname.lower())[1]
        return team[1] if team else ""

    def _host_facts(self, host: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        """(dev host entry, device team entry) deciding for a lower-case host name. Cached: hosts repeat,
        so the hot path is one dict probe whether entries are names or globs."""
        facts = self._host_cache.get(host)
        if facts is None:
            facts = (self._dev_hosts.lookup(host), self._device_teams.lookup(host))
            if len(self._host_cache) >= _HOST_CACHE_MAX:
                self._host_cache.clear()
            self._host_cache[host] = facts
        return facts

    def match(
        self,
        hostname: str,
        message: str = "",
        trap_oid: str | None = None,
        syslog_severity: int | None = None,
        *,
        all_matches: bool = False,
    ) -> MatchResult:
        """Find the winning rule for one event and the handling and team that follow from it.

        With `all_matches=True` (rule tester) `matches` lists every matching rule in priority
        order; otherwise it holds just the winner, if any.
        """
        if all_matches:
            matches = tuple(self._rules[rank] for rank in self._all_ranks(message, trap_oid, syslog_severity))
            environment, rule, handling, team = self._decision(hostname, matches[0] if matches else None)
        else:
            environment, rule, handling, team = self.decide(hostname, message, trap_oid, syslog_severity)
            matches = () if rule is None else (rule,)
        dev, team_entry = self._host_facts(hostname.lower())
        from_device = rule is None or not rule.team_assignment
        return MatchResult(
            environment,
            rule,
            handling,
            team,
            matches,
            dev_entry=dev[0] if dev else "",
            team_entry=team_entry[0] if team_entry and from_device else "",
        )

    def decide(
        self, hostname: str, message: str = "", trap_oid: str | None = None, syslog_severity: int | None = None
    ) -> tuple[str, RuleSpec | None, str, str]:
        """``match`` for the alerter's hot path: (environment, winning rule or None, handling, team), with
        no result object made per event."""
        best = self._best_rank(message, trap_oid, syslog_severity)
        return self._decision(hostname, None if best == self._no_rule else self._rules[best])

    def _decision(self, hostname: str, rule: RuleSpec | None) -> tuple[str, RuleSpec | None, str, str]:
        """Environment, rule, handling and team for an event from ``hostname`` that ``rule`` won."""
        dev, device_team = self._host_facts(hostname.lower())
        environment = DEV if dev else PROD
        team = device_team[1] if device_team else ""
        if rule is None:
            return environment, None, UNHANDLED, team
        return (
            environment,
            rule,
            rule.dev_handling if environment == DEV else rule.prod_handling,
            rule.team_assignment or team,
        )

    def _oid_hits(self, trap_oid: str) -> Iterator[tuple[int, ...]]:
        """Rank groups of every oid_prefix rule whose OID is the event OID or a dotted prefix of it."""
        oids = self._oids
        oid = normalise_oid(trap_oid)
        limit = self._oid_max_len
        # Walk the dots: each prefix ending just before a dot is a candidate rule OID.
        end = oid.find(".")
        while 0 <= end <= limit:
            hit = oids.get(oid[:end])
            if hit is not None:
                yield hit
            end = oid.find(".", end + 1)
        if len(oid) <= limit and (hit := oids.get(oid)) is not None:
            yield hit

    def _best_rank(self, message: str, trap_oid: str | None, severity: int | None) -> int:
        """Lowest matching rank, or `_no_rule`. Cheap sources first so the regex sets can be skipped."""
        best = self._no_rule
        wanted = self._wanted_severity
        if trap_oid and self._oids:
            for ranks in self._oid_hits(trap_oid):
                best = _pick(ranks, best, wanted, severity)
        if message and self._automaton is not None:  # a contains rule's text is never empty
            for _end, ranks in self._automaton.iter(message.casefold()):
                best = _pick(ranks, best, wanted, severity)
        # Regex rules are tried on an empty message too: "^$" is how a rule catches a trap without text.
        chunks = self._regex_chunks
        if chunks and chunks[0].first_rank < best:
            data = message.encode("utf-8", "replace")
            for chunk in chunks:
                # Chunks hold ascending, disjoint rank ranges: once one can't win, none after can.
                if chunk.first_rank >= best:
                    break
                before = best
                groups = chunk.ranks
                for index in chunk.hits(data):
                    best = _pick(groups[index], best, wanted, severity)
                if best != before:
                    break
        return best

    def _all_ranks(self, message: str, trap_oid: str | None, severity: int | None) -> list[int]:
        """Every matching rank, ascending (the slow, complete path for the rule tester)."""
        found: set[int] = set()
        if trap_oid and self._oids:
            for ranks in self._oid_hits(trap_oid):
                found.update(ranks)
        if message and self._automaton is not None:
            for _end, ranks in self._automaton.iter(message.casefold()):
                found.update(ranks)
        data = message.encode("utf-8", "replace")
        for chunk in self._regex_chunks:
            for index in chunk.hits(data):
                found.update(chunk.ranks[index])
        wanted = self._wanted_severity
        return sorted(rank for rank in found if wanted[rank] is None or wanted[rank] == severity)
