"""rule_engine: microseconds per ``RuleSet.match`` with 10, 1,000 and 10,000 active rules (in process).

The engine is plain Python with no Django, so it is timed directly: compile the corpus rules with the
corpus's development hosts and device teams, warm up, then match the same events once per run.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import corpus
from benchmarks.env import BenchEnv
from benchmarks.plan import RULE_COUNTS, Plan
from rules.engine import RuleSet, RuleSpec

_SPEC_FIELDS = (
    "priority", "match_type", "match_string", "trap_oid", "syslog_severity", "prod_handling", "dev_handling",
    "team_assignment", "severity", "description",
)  # fmt: skip


def compile_rules(count: int) -> RuleSet:
    specs = [
        RuleSpec(id=index, **{name: fields[name] for name in _SPEC_FIELDS})
        for index, fields in enumerate(corpus.rules(count), start=1)
    ]
    return RuleSet.compile(specs, corpus.dev_hosts(), corpus.device_teams(), version=f"bench-{count}")


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    events = [(s.hostname, s.message, s.trap_oid, s.severity) for s in corpus.samples(plan.engine_events, seed=7)]
    figures: dict[str, Any] = {}
    runs: dict[str, list[float]] = {}
    detail: dict[str, Any] = {}
    for count in RULE_COUNTS:
        started = time.perf_counter()
        ruleset = compile_rules(count)
        compile_ms = (time.perf_counter() - started) * 1000
        match = ruleset.match
        for hostname, message, trap_oid, severity in events[:1000]:  # warm the lazily built RE2 DFAs
            match(hostname, message, trap_oid, severity)
        timings = []
        for _ in range(max(plan.runs, 3)):  # cheap: always at least three passes
            started = time.perf_counter()
            for hostname, message, trap_oid, severity in events:
                match(hostname, message, trap_oid, severity)
            timings.append((time.perf_counter() - started) / len(events) * 1e6)
        name = f"us_per_event_{count}"
        figures[name] = round(statistics.median(timings), 2)
        runs[name] = [round(t, 2) for t in timings]
        matched = sum(1 for event in events[:5000] if match(*event).rule is not None)
        detail[f"rules_{count}"] = {
            "compile_ms": round(compile_ms, 1),
            "regex_sets": repr(ruleset),
            "matched_share": round(matched / min(len(events), 5000), 3),
        }
    figures["ratio_10000_vs_10"] = round(figures["us_per_event_10000"] / figures["us_per_event_10"], 2)
    return {**figures, "runs": runs, "detail": detail, "params": {"events": len(events)}}
