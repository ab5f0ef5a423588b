"""Prometheus metrics of the alerter."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("mutt_alerter_events_total", "Events handled by alerters, by outcome.", ["outcome"])
BATCH_SECONDS = Histogram(
    "mutt_alerter_batch_seconds", "Time from decoding a batch to its acknowledgement (audit, alerts, flood counts).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
RULES_LOADED = Gauge("mutt_alerter_rules", "Active rules in this alerter's compiled snapshot.")
RELOAD_SECONDS = Histogram("mutt_alerter_reload_seconds", "Time to rebuild the rule snapshot.")
RELOAD_FAILURES = Counter("mutt_alerter_reload_failures_total", "Snapshot rebuilds that failed (previous kept).")
RECLAIMED = Counter("mutt_alerter_reclaimed_total", "Entries taken over from stalled alerters.")
DB_ERRORS = Counter("mutt_alerter_db_errors_total", "Batches the database refused (kept and retried).")
FLOODS = Counter("mutt_alerter_floods_total", "Unmatched-event flood meta-alerts raised.")
ALERT_BACKLOG = Gauge(
    "mutt_alerter_alert_backlog", "Entries not yet acknowledged in the longest destination stream (what sheds load)."
)
DESTINATION_BACKLOG = Gauge(
    "mutt_alerter_destination_backlog", "Entries not yet acknowledged in a destination's stream.", ["destination"]
)
INGEST_LAG = Gauge("mutt_alerter_consumer_lag", "Entries in the ingest stream not yet acknowledged.")
DLQ_DEPTH = Gauge("mutt_alerter_dlq_depth", "Entries in the alerter dead-letter queue.")
QUEUE_WARNINGS = Counter("mutt_alerter_queue_warnings_total", "Steps with the alert backlog above the warning level.")
SHED_STEPS = Counter("mutt_alerter_shed_steps_total", "Steps that shed load, by mode.", ["mode"])
FINISH_FAILURES = Counter(
    "mutt_alerter_finish_failures_total",
    "Audited batches whose alerts and acknowledgement failed (entries stay pending and are taken over).",
)
AUDIT_REDELIVERED_BATCHES = Counter(
    "mutt_alerter_audit_redelivered_batches_total",
    "Batches whose COPY met an event audited before (a redelivery), written again with ON CONFLICT DO NOTHING.",
)
