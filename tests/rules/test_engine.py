"""Tests for the compiled rule matcher (plain Python: no Django, no database)."""

from __future__ import annotations

import dataclasses

import pytest

from rules import regexsets
from rules.engine import InvalidRule, MatchResult, RuleSet, RuleSpec

LINK_DOWN = "%LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down"


def contains(rule_id: int, text: str, priority: int = 100, **fields: object) -> RuleSpec:
    return RuleSpec(id=rule_id, priority=priority, match_type="contains", match_string=text, **fields)


def regex(rule_id: int, pattern: str, priority: int = 100, **fields: object) -> RuleSpec:
    return RuleSpec(id=rule_id, priority=priority, match_type="regex", match_string=pattern, **fields)


def oid(rule_id: int, trap_oid: str, priority: int = 100, **fields: object) -> RuleSpec:
    return RuleSpec(id=rule_id, priority=priority, match_type="oid_prefix", trap_oid=trap_oid, **fields)


def winner_id(rules: RuleSet, **event: object) -> int | None:
    result = rules.match(event.pop("hostname", "router1"), **event)
    return None if result.rule is None else result.rule.id


# --- precedence ---------------------------------------------------------------------------------


def test_lower_priority_number_wins() -> None:
    rules = RuleSet.compile([contains(1, "updown", priority=50), contains(2, "link", priority=10)])
    assert winner_id(rules, message=LINK_DOWN) == 2


def test_ties_broken_by_id() -> None:
    rules = RuleSet.compile([contains(9, "updown", priority=5), regex(4, r"state to \w+", priority=5)])
    assert winner_id(rules, message=LINK_DOWN) == 4


def test_priority_applies_across_match_types() -> None:
    rules = RuleSet.compile(
        [
            contains(1, "linkdown", priority=30),
            regex(2, r"linkDown", priority=20),
            oid(3, "1.3.6.1.6.3.1.1.5", priority=10),
        ]
    )
    assert winner_id(rules, message="trap linkDown", trap_oid="1.3.6.1.6.3.1.1.5.3") == 3
    assert winner_id(rules, message="trap linkDown") == 2


def test_all_matches_in_priority_order() -> None:
    rules = RuleSet.compile(
        [
            contains(1, "gigabitethernet", priority=30),
            regex(2, r"changed state to (up|down)", priority=10),
            contains(3, "%LINK", priority=20),
            contains(4, "no such text", priority=1),
            regex(5, r"Interface \S+,", priority=10),
        ]
    )
    result = rules.match("router1", LINK_DOWN, all_matches=True)
    assert [rule.id for rule in result.matches] == [2, 5, 3, 1]
    assert result.rule is result.matches[0]


def test_without_all_matches_only_the_winner_is_listed() -> None:
    rules = RuleSet.compile([contains(1, "link", priority=2), contains(2, "down", priority=1)])
    result = rules.match("router1", LINK_DOWN)
    assert [rule.id for rule in result.matches] == [2]


def test_best_match_agrees_with_all_matches_winner() -> None:
    # The fast path skips regex sets that cannot win; it must still pick the same winner.
    rules = RuleSet.compile(
        [regex(i, rf"Ethernet0/{i % 7}\b", priority=i % 13) for i in range(1, 400)]
        + [contains(1000 + i, f"0/{i % 5}", priority=i % 11) for i in range(50)]
    )
    for port in range(8):
        message = f"%LINK-3-UPDOWN: Interface GigabitEthernet0/{port}, changed state to down"
        fast = rules.match("router1", message)
        full = rules.match("router1", message, all_matches=True)
        assert fast.rule == full.rule


# --- contains -----------------------------------------------------------------------------------


def test_contains_is_case_insensitive() -> None:
    rules = RuleSet.compile([contains(1, "Changed STATE to Down")])
    assert winner_id(rules, message=LINK_DOWN) == 1
    assert winner_id(rules, message=LINK_DOWN.upper()) == 1


def test_contains_rules_may_share_one_string() -> None:
    rules = RuleSet.compile([contains(1, "updown", priority=5), contains(2, "UPDOWN", priority=1)])
    result = rules.match("router1", LINK_DOWN, all_matches=True)
    assert [rule.id for rule in result.matches] == [2, 1]


def test_contains_does_not_match_partial_text() -> None:
    rules = RuleSet.compile([contains(1, "changed state to administratively down")])
    assert winner_id(rules, message=LINK_DOWN) is None


# --- regex --------------------------------------------------------------------------------------


def test_regex_is_searched_not_fullmatched() -> None:
    rules = RuleSet.compile([regex(1, r"Interface Gigabit\S+")])
    assert winner_id(rules, message=LINK_DOWN) == 1


def test_regex_anchors_still_apply() -> None:
    rules = RuleSet.compile([regex(1, r"^Interface"), regex(2, r"down$")])
    result = rules.match("router1", LINK_DOWN, all_matches=True)
    assert [rule.id for rule in result.matches] == [2]


def test_regex_is_case_sensitive_unless_pattern_says_otherwise() -> None:
    rules = RuleSet.compile([regex(1, r"CHANGED STATE", priority=1), regex(2, r"(?i)CHANGED STATE", priority=2)])
    assert winner_id(rules, message=LINK_DOWN) == 2


def test_regex_matches_non_ascii_messages() -> None:
    rules = RuleSet.compile([regex(1, r"Temperatur \d+°C"), contains(2, "ÜBERHITZT")])
    result = rules.match("router1", "Warnung: Temperatur 91°C überhitzt", all_matches=True)
    assert [rule.id for rule in result.matches] == [1, 2]


def test_invalid_regex_raises_naming_rule_and_field() -> None:
    with pytest.raises(InvalidRule) as caught:
        RuleSet.compile([regex(1, r"ok"), regex(42, r"Interface (Gi|Te")])
    assert caught.value.rule_id == 42
    assert caught.value.field == "match_string"
    assert "42" in str(caught.value)
    assert "match_string" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_regex_rejected_by_re2_but_fine_for_python_is_invalid() -> None:
    # Backreferences and look-arounds are exactly what RE2 refuses; the rule must not vanish.
    with pytest.raises(InvalidRule, match="rule 7"):
        RuleSet.compile([regex(7, r"(\w+) \1")])


def test_many_regex_rules_all_found() -> None:
    specs = [
        regex(i, rf"%LINK-\d-UPDOWN: Interface GigabitEthernet{i}/\d+, changed state to (up|down)")
        for i in range(1, 3001)
    ]
    rules = RuleSet.compile(specs)
    assert rules.rule_count == 3000
    for number in (1, 999, 1500, 2999, 3000):
        message = f"%LINK-3-UPDOWN: Interface GigabitEthernet{number}/7, changed state to up"
        result = rules.match("router1", message, all_matches=True)
        assert [rule.id for rule in result.matches] == [number]
        assert winner_id(rules, message=message) == number
    assert winner_id(rules, message="%SYS-5-CONFIG_I: Configured from console by admin") is None
    assert rules.match("router1", LINK_DOWN.replace("0/1", "9999/1"), all_matches=True).matches == ()


def test_regex_sets_are_chunked_and_still_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(regexsets, "SET_MAX_PATTERNS", 7)
    specs = [regex(i, rf"port {i}\b", priority=3000 - i) for i in range(1, 101)]
    rules = RuleSet.compile(specs)
    assert len(rules._regex_chunks) >= 100 // 7
    message = "port 3 port 50 port 99"
    assert [rule.id for rule in rules.match("h", message, all_matches=True).matches] == [99, 50, 3]
    assert winner_id(rules, message=message) == 99


def test_sets_re2_refuses_are_split_without_losing_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(regexsets, "SET_MAX_MEM", 4 << 10)  # too small for most sets: forces halving
    rules = RuleSet.compile([regex(i, rf"port {i}\b", priority=i) for i in range(1, 20)])
    assert len(rules._regex_chunks) > 1
    assert [rule.id for rule in rules.match("h", "port 3 and port 17", all_matches=True).matches] == [3, 17]
    assert winner_id(rules, message="port 18, port 19") == 18


def test_regex_set_memory_failure_falls_back_to_single_patterns() -> None:
    rules = RuleSet.compile([regex(1, r"link"), regex(2, r"down")])
    chunk = rules._regex_chunks[0]

    class GivesUp:
        def Match(self, data: bytes) -> list[int]:
            return []  # what the RE2 binding returns when the DFA runs out of memory

    chunk.matcher = GivesUp()
    assert winner_id(rules, message="link is down") == 1
    assert [rule.id for rule in rules.match("h", "down", all_matches=True).matches] == [2]


# --- oid_prefix ---------------------------------------------------------------------------------


def test_oid_prefix_respects_dot_boundary() -> None:
    rules = RuleSet.compile([oid(1, "1.3.6.1.4.1.9")])
    assert winner_id(rules, trap_oid="1.3.6.1.4.1.9.9.41.2.0.1") == 1
    assert winner_id(rules, trap_oid="1.3.6.1.4.1.9") == 1
    assert winner_id(rules, trap_oid="1.3.6.1.4.1.99") is None
    assert winner_id(rules, trap_oid="1.3.6.1.4.1.99.1") is None
    assert winner_id(rules, trap_oid="1.3.6.1.4.1") is None


def test_event_oid_is_normalised() -> None:
    rules = RuleSet.compile([oid(1, "1.3.6.1.4.1.9")])
    assert winner_id(rules, trap_oid="  .1.3.6.1.4.1.9.9.41  ") == 1


def test_nested_oid_prefixes_all_match() -> None:
    rules = RuleSet.compile([oid(1, "1.3.6", priority=1), oid(2, "1.3.6.1.4.1.9.9", priority=0), oid(3, "1.3.7")])
    result = rules.match("router1", trap_oid="1.3.6.1.4.1.9.9.41", all_matches=True)
    assert [rule.id for rule in result.matches] == [2, 1]


def test_oid_rules_ignore_events_without_trap_oid() -> None:
    rules = RuleSet.compile([oid(1, "1.3.6.1.4.1.9")])
    assert winner_id(rules, message="1.3.6.1.4.1.9 in the text") is None


# --- severity filter ----------------------------------------------------------------------------


def test_severity_filter_requires_exact_severity() -> None:
    rules = RuleSet.compile([contains(1, "updown", priority=1, syslog_severity=3), contains(2, "updown")])
    assert winner_id(rules, message=LINK_DOWN, syslog_severity=3) == 1
    assert winner_id(rules, message=LINK_DOWN, syslog_severity=2) == 2
    assert winner_id(rules, message=LINK_DOWN, syslog_severity=4) == 2


def test_severity_filter_skips_events_without_severity() -> None:
    rules = RuleSet.compile([regex(1, "UPDOWN", syslog_severity=0)])
    assert winner_id(rules, message=LINK_DOWN) is None
    assert winner_id(rules, message=LINK_DOWN, syslog_severity=0) == 1


def test_severity_filter_applies_to_all_matches() -> None:
    rules = RuleSet.compile(
        [
            oid(1, "1.3.6", syslog_severity=5),
            oid(2, "1.3.6", priority=200),
            contains(3, "x", syslog_severity=6),
        ]
    )
    result = rules.match("h", "x", trap_oid="1.3.6.1", syslog_severity=6, all_matches=True)
    assert [rule.id for rule in result.matches] == [3, 2]


# --- environment, handling, team ----------------------------------------------------------------


def test_dev_host_uses_dev_handling() -> None:
    rule = contains(1, "updown", prod_handling="page_and_ticket", dev_handling="ticket_only")
    rules = RuleSet.compile([rule], dev_hosts=["lab-sw1"])
    dev = rules.match("lab-sw1", LINK_DOWN)
    prod = rules.match("core-sw1", LINK_DOWN)
    assert (dev.environment, dev.handling) == ("dev", "ticket_only")
    assert (prod.environment, prod.handling) == ("prod", "page_and_ticket")


def test_hostnames_are_case_insensitive() -> None:
    rules = RuleSet.compile(
        [contains(1, "updown", dev_handling="ignore")],
        dev_hosts=["Lab-SW1"],
        device_teams={"CORE-Router1": "network"},
    )
    assert rules.match("LAB-sw1", LINK_DOWN).handling == "ignore"
    assert rules.environment_of("lab-SW1") == "dev"
    assert rules.environment_of("elsewhere") == "prod"
    assert rules.team_of("core-router1") == "network"
    assert rules.match("Core-Router1", LINK_DOWN).team == "network"


def test_rule_team_wins_over_device_team() -> None:
    rules = RuleSet.compile([contains(1, "updown", team_assignment="noc")], device_teams={"r1": "network"})
    assert rules.match("r1", LINK_DOWN).team == "noc"


def test_team_falls_back_to_device_team() -> None:
    rules = RuleSet.compile([contains(1, "updown", team_assignment="")], device_teams={"r1": "network"})
    assert rules.match("r1", LINK_DOWN).team == "network"
    assert rules.match("r2", LINK_DOWN).team == ""


def test_unmatched_event_is_unhandled() -> None:
    rules = RuleSet.compile([contains(1, "bgp")], dev_hosts=["lab1"], device_teams={"lab1": "lab-team"})
    result = rules.match("LAB1", LINK_DOWN, trap_oid="1.3.6.1", syslog_severity=3)
    assert result == MatchResult(
        environment="dev",
        rule=None,
        handling="unhandled",
        team="lab-team",
        matches=(),
        dev_entry="lab1",
        team_entry="lab1",
    )


def test_result_carries_rule_details() -> None:
    rule = regex(5, "UPDOWN", severity="critical", description="interface flaps", team_assignment="noc")
    result = RuleSet.compile([rule]).match("r1", LINK_DOWN)
    assert result.rule == rule
    assert (result.rule.severity, result.rule.description) == ("critical", "interface flaps")


# --- snapshot -----------------------------------------------------------------------------------


def test_empty_rule_set_matches_nothing() -> None:
    rules = RuleSet.empty()
    assert rules.rule_count == 0
    assert rules.version == ""
    result = rules.match("r1", LINK_DOWN, trap_oid="1.3.6.1", all_matches=True)
    assert (result.rule, result.handling, result.matches) == (None, "unhandled", ())


def test_compile_records_version_and_time() -> None:
    rules = RuleSet.compile([contains(2, "b"), contains(1, "a")], version="v42")
    assert rules.version == "v42"
    assert rules.rule_count == 2
    assert rules.compiled_at > 0
    assert [rule.id for rule in rules.rules] == [1, 2]


def test_specs_and_results_are_frozen() -> None:
    rule = contains(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.priority = 0  # type: ignore[misc]
    result = RuleSet.compile([rule]).match("h", "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.handling = "ignore"  # type: ignore[misc]


def test_event_with_only_a_hostname_is_unhandled() -> None:
    rules = RuleSet.compile([contains(1, "x"), regex(2, "y"), oid(3, "1.3")])
    assert rules.match("r1").handling == "unhandled"


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (RuleSpec(id=1, priority=1, match_type="glob", match_string="x"), "match_type"),
        (contains(1, ""), "match_string"),
        (regex(1, ""), "match_string"),
        (oid(1, ""), "trap_oid"),
        (oid(1, "1.3.six.1"), "trap_oid"),
        (oid(1, "1.3..6"), "trap_oid"),
        (contains(1, "x", prod_handling="page"), "prod_handling"),
        (contains(1, "x", dev_handling="PAGE_ONLY"), "dev_handling"),
        (contains(1, "x", syslog_severity=8), "syslog_severity"),
    ],
)
def test_invalid_rules_are_rejected_not_dropped(spec: RuleSpec, field: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        RuleSet.compile([spec])
    assert (caught.value.rule_id, caught.value.field) == (1, field)


def test_duplicate_rule_ids_are_rejected() -> None:
    with pytest.raises(InvalidRule, match="duplicate"):
        RuleSet.compile([contains(1, "a"), regex(1, "b")])


def test_rule_oid_with_leading_dot_is_accepted() -> None:
    rules = RuleSet.compile([oid(1, ".1.3.6.1.4.1.9")])
    assert winner_id(rules, trap_oid="1.3.6.1.4.1.9.1") == 1


def test_decide_gives_what_match_gives_without_the_result_object() -> None:
    rules = RuleSet.compile(
        [
            contains(1, "changed state to down", priority=10, team_assignment="network-ops", dev_handling="ignore"),
            regex(2, r"BGP.*Idle", priority=20, prod_handling="page_only"),
            oid(3, "1.3.6.1.6.3.1.1.5", priority=30, syslog_severity=2),
        ],
        dev_hosts=["lab-rtr-1"],
        device_teams={"core-rtr-1": "core", "lab-rtr-1": "lab"},
    )
    events = [
        ("core-rtr-1", LINK_DOWN, None, 3),
        ("LAB-RTR-1", LINK_DOWN, None, 3),
        ("core-rtr-1", "BGP peer 10.0.0.1 changed state from Established to Idle", None, 5),
        ("core-rtr-1", "trap", "1.3.6.1.6.3.1.1.5.3", 2),
        ("core-rtr-1", "trap", "1.3.6.1.6.3.1.1.5.3", 4),  # the OID rule wants severity 2
        ("lab-rtr-1", "nothing to see", None, None),
    ]
    for hostname, message, trap_oid, severity in events:
        result = rules.match(hostname, message, trap_oid, severity)
        decided = rules.decide(hostname, message, trap_oid, severity)
        assert decided == (result.environment, result.rule, result.handling, result.team)
    assert [rules.decide(*event)[2] for event in events] == [
        "page_and_ticket", "ignore", "page_only", "page_and_ticket", "unhandled", "unhandled",
    ]  # fmt: skip
