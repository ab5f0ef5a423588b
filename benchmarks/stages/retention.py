"""retention: archive, verify and drop an expired month of the event audit log (ADR-016).

One partition of an old month is filled with ``retention_rows`` audit rows made from the corpus (the
alerter's event JSON as ``raw``, unique ids per row), then :class:`retention.archive.policy.EventsPolicy`
runs twice against the folder store under the data folder:

- with the legal hold on: export to zstd Parquet and verification only, timed as ``rows_per_s_archived``
  (rows over the seconds of export plus verify, i.e. of the whole held run); ``bytes_per_row`` is the
  archive's size over its rows;
- without it: DETACH and DROP; ``drop_s`` is the time of those two statements (the run also re-checks
  the detached table against the manifest first: ``finish_s`` is the whole run).

With ``alerter_events`` > 0 the alerter's drain rate is then measured alone and while a second month is
archived (in a child process), as ``alerter_rate_during_archival`` (a ratio; target >= 0.8).
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from benchmarks import corpus, feed, servers
from benchmarks.env import BenchEnv
from benchmarks.plan import Plan

TABLE = "rules_eventauditlog"
MONTHS = ((2001, 1), (2001, 2))  # far past: expired whatever event_retention_days is
TEMPLATE_ROWS = 20_000


def _name(year: int, month: int) -> str:
    return f"{TABLE}_y{year:04d}m{month:02d}"


def _template() -> io.BytesIO:
    """TEMPLATE_ROWS realistic rows as CSV (hostname, message, trap_oid, severity, source_type, raw)."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for index, sample in enumerate(corpus.samples(TEMPLATE_ROWS)):
        raw = orjson.dumps(
            {"event_id": "00000000-0000-0000-0000-000000000000", "hostname": sample.hostname,
             "message": sample.message, "timestamp": "2001-01-01T00:00:00.000000+00:00", "timestamp_inferred": True,
             "syslog_severity": sample.severity, "facility": 23 if sample.trap_oid is None else None,
             "trap_oid": sample.trap_oid, "source_type": sample.source_type,
             "source_ip": f"10.200.{index % 250}.{index % 199 + 1}", "variables": None, "extra": {},
             "received_at": "2001-01-01T00:00:00.000000+00:00", "correlation_id": "0" * 32,
             "ingested_by": "bench"}
        ).decode()  # fmt: skip
        severity = "" if sample.severity is None else sample.severity
        writer.writerow([index, sample.hostname, sample.message, sample.trap_oid or "", severity,
                         sample.source_type, raw])  # fmt: skip
    return io.BytesIO(buffer.getvalue().encode())


def fill_month(year: int, month: int, rows: int) -> str:
    """Create the month's partition afresh and fill it with ``rows`` rows built from the template."""
    from django.db import connection

    name = _name(year, month)
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    seconds = (end - start).total_seconds()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
        cursor.execute(f'CREATE TABLE "{name}" PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)', [start, end])
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_template (i int, hostname text, message text, trap_oid text,"
            " severity smallint, source_type text, raw text)"
        )
        cursor.execute("TRUNCATE bench_template")
        cursor.cursor.copy_expert("COPY bench_template FROM STDIN (FORMAT csv)", _template())
        # One statement per template pass keeps each transaction (and its WAL) bounded.
        for rep in range(0, rows, TEMPLATE_ROWS):
            cursor.execute(
                f"""
                INSERT INTO {TABLE} (event_id, event_time, received_at, hostname, environment, rule_id, handling,
                    team, forwarded, alert_severity, syslog_severity, message, trap_oid, source_type,
                    correlation_id, raw, dead_letter_reason)
                SELECT e.id, e.at, e.at + interval '35 milliseconds', t.hostname, 'prod',
                       CASE WHEN t.i %% 10 < 6 THEN t.i %% 1000 END,
                       CASE WHEN t.i %% 10 < 6 THEN 'page_and_ticket' ELSE 'no_match' END,
                       CASE WHEN t.i %% 10 < 6 THEN 'network-ops' ELSE '' END, t.i %% 10 < 6,
                       CASE WHEN t.i %% 10 < 6 THEN 'major' ELSE '' END, t.severity, t.message,
                       coalesce(t.trap_oid, ''), t.source_type, md5(e.id::text),
                       replace(replace(t.raw, '00000000-0000-0000-0000-000000000000', e.id::text),
                               '"0000000000000000', '"' || md5(e.id::text))::json, ''
                FROM bench_template t,
                     LATERAL (SELECT md5((%s + t.i)::text || %s)::uuid AS id,
                                     %s::timestamptz + make_interval(secs => (%s + t.i) * %s) AS at) e
                WHERE %s + t.i < %s
                """,  # noqa: S608 (a constant table name, values bound)
                [rep, name, start, rep, seconds / rows, rep, rows],
            )
        cursor.execute(f'ANALYZE "{name}"')
    return name


class _Quiet:
    def update(self, done: int, total: int | None, label: str) -> None:
        pass


def _run_policy(hold: bool) -> Any:
    from retention.archive.policy import EventsPolicy
    from retention.models import RetentionRun, RunOutcome

    run = RetentionRun.objects.create(policy="events", actor="system:bench", reason="benchmark")
    started = time.monotonic()
    EventsPolicy().apply(run, datetime.now(UTC), hold=hold, progress=_Quiet())
    run.outcome = RunOutcome.HELD if hold else RunOutcome.DONE
    run.save()
    return run, time.monotonic() - started


def run(env: BenchEnv, plan: Plan) -> dict[str, Any]:
    from retention.models import ArchivedPartition

    rows = plan.retention_rows
    ArchivedPartition.objects.filter(partition__in=[_name(*m) for m in MONTHS]).delete()
    started = time.monotonic()
    name = fill_month(*MONTHS[0], rows)
    fill_s = time.monotonic() - started

    _, archive_s = _run_policy(hold=True)
    archive = ArchivedPartition.objects.get(partition=name)
    if archive.state != "verified" or archive.rows != rows:
        raise RuntimeError(f"archive of {name}: state {archive.state}, {archive.rows} of {rows} rows")
    done, finish_s = _run_policy(hold=False)
    steps = {entry["step"]: entry for entry in done.details.get("partitions", [])}
    drop_s = steps["detached"]["seconds"] + steps["dropped"]["seconds"]
    figures: dict[str, Any] = {
        "rows_per_s_archived": round(rows / archive_s),
        "bytes_per_row": round(archive.bytes / rows, 1),
        "drop_s": round(drop_s, 3),
    }
    detail: dict[str, Any] = {
        "rows": rows, "fill_s": round(fill_s, 1), "archive_and_verify_s": round(archive_s, 2),
        "finish_s": round(finish_s, 2), "archive_bytes": archive.bytes, "files": len(archive.files),
        # DETACH is all the log itself waits for; DROP frees the detached table's files, blocking nothing.
        "detach_s": steps["detached"]["seconds"], "drop_only_s": steps["dropped"]["seconds"],
        "partition_bytes_dropped": done.bytes_deleted,
    }  # fmt: skip
    if plan.retention_alerter_events:
        figures["alerter_rate_during_archival"], detail["alerter"] = _alerter_during_archival(env, plan)
    return {**figures, "detail": detail, "params": {"rows": rows, "store": "folder (MUTT_DATA_DIR/archive)"}}


def _drain(env: BenchEnv, payloads: list[bytes], name: str) -> float:
    """Events/s of one ``run_alerter`` draining ``payloads`` (as the alerter stage, without its reset:
    the audit log's TRUNCATE would wait for, then empty, the month being archived)."""
    from core import contracts, streams
    from core.redis import get_redis

    client = get_redis()
    stream, group = streams.ingest_stream(), contracts.ALERTERS_GROUP
    feed.push(client, stream, payloads)
    child = servers.start_worker(env, name, "run_alerter")
    try:
        first = feed.wait_first_read(client, stream, group, child, timeout=120)
        done = feed.wait_drained(client, stream, group, child, timeout=60 + len(payloads) / 500)
    finally:
        env.children.stop(child)
    return len(payloads) / (done - first)


def _alerter_during_archival(env: BenchEnv, plan: Plan) -> tuple[float, dict[str, Any]]:
    """The alerter's drain rate alone, then while another month is archived and dropped by a child process."""
    from benchmarks.stages.alerter import QUIET_BACKLOG

    env.set_settings(QUIET_BACKLOG)
    feed.install_hosts()
    feed.install_rules(1_000)
    payloads = feed.event_payloads(plan.retention_alerter_events)
    env.reset_pipeline()
    alone = _drain(env, payloads, "retention-alerter-alone")
    env.reset_pipeline()
    fill_month(*MONTHS[1], plan.retention_rows)
    code = "from benchmarks.stages.retention import _run_policy; _run_policy(False)"
    archiver = env.children.spawn("retention-archiver", env.manage_argv("shell", "-c", code), env.child_env())
    try:
        time.sleep(1.0)  # the archival is under way (its export takes seconds at full size)
        during = _drain(env, payloads, "retention-alerter-during")
        outlasted = archiver.alive()
        status = env.children.wait(archiver, timeout=900)
    finally:
        env.children.stop(archiver)
    if status != 0:
        raise RuntimeError(f"the archival child failed: {archiver.log_tail()}")
    ratio = round(during / alone, 3)
    return ratio, {"alone_events_per_s": round(alone), "during_events_per_s": round(during),
                   "archival_outlasted_the_drain": outlasted}  # fmt: skip
