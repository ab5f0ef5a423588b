"""What a benchmark run measures and at which sizes: the full plan, the smoke plan, and the targets."""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

STAGES = ("rule_engine", "alerter", "ingest", "forwarder", "end_to_end", "config_propagation", "retention")
RULE_COUNTS = (10, 1_000, 10_000)


@dataclass(frozen=True)
class Plan:
    smoke: bool = False
    runs: int = 3  # every figure is the median of this many runs
    engine_events: int = 20_000  # events matched per rule-engine run
    alerter_events: int = 200_000  # pre-loaded events per alerter run
    ingest_seconds: float = 20.0  # per ingest mode (batch, single, ceiling) and run
    ingest_processes: int = 2  # load-generator processes
    ingest_threads: int = 4  # connections per load-generator process
    ingest_batch: int = 500
    web_workers: int = 0  # gunicorn workers (ingest, end_to_end); 0: one per core, as `mutt up` by default
    forwarder_alerts: int = 50_000  # pre-loaded alerts per forwarder run
    e2e_rate: float = 5_000.0  # offered events per second
    e2e_seconds: float = 30.0
    e2e_batch: int = 50  # events per paced request (50 every 10 ms at 5,000/s)
    e2e_rules: int = 1_000
    config_changes: int = 100  # changes per propagation run
    retention_rows: int = 2_000_000  # audit rows in the month archived and dropped
    retention_alerter_events: int = 100_000  # events drained by the alerter alone and during archival

    @classmethod
    def full(cls) -> Plan:
        return cls()

    @classmethod
    def small(cls) -> Plan:
        """``--smoke``: every stage and figure at tiny sizes, one run each, in well under a minute."""
        return cls(
            smoke=True,
            runs=1,
            engine_events=1_000,
            alerter_events=2_000,
            ingest_seconds=1.5,
            forwarder_alerts=1_000,
            e2e_rate=1_000.0,
            e2e_seconds=3.0,
            e2e_batch=50,
            config_changes=10,
            retention_rows=20_000,
            retention_alerter_events=2_000,
        )

    def with_overrides(self, **values: Any) -> Plan:
        return replace(self, **{name: value for name, value in values.items() if value is not None})

    def describe(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# Figures every run must produce (make bench-smoke fails when one is missing).
REQUIRED: dict[str, tuple[str, ...]] = {
    "rule_engine": ("us_per_event_10", "us_per_event_1000", "us_per_event_10000"),
    "alerter": ("events_per_s_10_rules", "events_per_s_1000_rules", "events_per_s_10000_rules", "rss_mb_10000_rules"),
    "ingest": (
        "batch_events_per_s",
        "single_requests_per_s",
        "single_p50_ms",
        "single_p99_ms",
        "ceiling_requests_per_s",
    ),
    "forwarder": ("alerts_per_s_batched", "alerts_per_s_single"),
    "end_to_end": ("offered_per_s", "delivered", "lost", "p50_ms", "p95_ms", "p99_ms"),
    "config_propagation": ("p50_ms", "p99_ms"),
    "retention": ("rows_per_s_archived", "bytes_per_row", "drop_s", "alerter_rate_during_archival"),
}

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


@dataclass(frozen=True)
class Target:
    stage: str
    figure: str
    op: str
    value: float
    text: str
    # The target only means something at full load (e.g. p99 "at 5,000 events/s offered").
    applies_when: tuple[str, str, float] | None = None

    def applies(self, figures: dict[str, Any]) -> bool:
        if self.applies_when is None:
            return True
        figure, op, value = self.applies_when
        return bool(_OPS[op](figures.get(figure) or 0, value))

    def check(self, figures: dict[str, Any]) -> dict[str, Any]:
        measured = figures.get(self.figure)
        verdict: bool | None = None
        note = ""
        if measured is None:
            note = "not measured"
        elif not self.applies(figures):
            figure, op, value = self.applies_when or ("", "", 0)
            note = f"n/a: needs {figure} {op} {value:g}"
        else:
            verdict = bool(_OPS[self.op](measured, self.value))
        check = {"figure": self.figure, "target": f"{self.op} {self.value:g}", "measured": measured, "pass": verdict}
        check["description"] = self.text
        if note:
            check["note"] = note
        return check


# fmt: off
TARGETS = (
    Target("alerter", "events_per_s_1000_rules", ">=", 30_000,
           "one alerter drains >= 30,000 events/s with 1,000 rules, audit writes included"),
    Target("alerter", "cost_ratio_10000_vs_10_rules", "<=", 2.0,
           "an event costs the alerter at most 2x more with 10,000 rules than with 10"),
    Target("alerter", "rss_mb_10000_rules", "<=", 200, "alerter peak RSS <= 200 MB with 10,000 rules"),
    Target("ingest", "batch_events_per_s", ">=", 50_000, "ingest of 500-event batches >= 50,000 events/s"),
    Target("ingest", "single_requests_per_s", ">=", 2_400, "single-event ingest >= 2,400 requests/s"),
    Target("ingest", "single_vs_ceiling", ">=", 0.60, "single-event ingest >= 60% of the bare-view ceiling"),
    Target("forwarder", "alerts_per_s_batched", ">=", 5_000, "forwarder >= 5,000 alerts/s batched"),
    Target("forwarder", "alerts_per_s_single", ">=", 2_000, "forwarder >= 2,000 alerts/s one per request"),
    Target("end_to_end", "p99_ms", "<=", 250, "ingest-to-Moogsoft p99 <= 250 ms at 5,000 events/s offered",
           applies_when=("offered_per_s", ">=", 4_900)),
    Target("end_to_end", "lost", "==", 0, "no accepted event is lost end to end"),
    Target("config_propagation", "p99_ms", "<=", 1_000, "a muttctl change is used by another process within 1 s (p99)"),
    Target("retention", "rows_per_s_archived", ">=", 100_000,
           "archive and verify >= 100,000 audit rows/s (2,000,000-row month, zstd Parquet, read back)"),
    Target("retention", "drop_s", "<=", 1.0, "dropping an expired month (DETACH + DROP) takes under a second"),
    Target("retention", "alerter_rate_during_archival", ">=", 0.8,
           "the alerter drains >= 80% of its rate alone while a month is archived and dropped"),
)
# fmt: on
