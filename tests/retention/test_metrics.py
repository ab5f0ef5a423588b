"""Retention's metrics on the web tier's /metrics, derived from the run records at scrape time."""

from __future__ import annotations

import socket

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from core import streams
from core.audit import Actor
from retention.service import run_retention
from tests.support.retention_stores import fill_dlq

OPS = Actor.cli("metrics-tests")


def scraped(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name.startswith("mutt_retention_") and not sample.name.endswith("_created")
    }


@pytest.fixture
def dlqs(redis_client):
    names = [streams.dlq_stream(q) for q in ("alerter", "moog", "dead")]
    redis_client.delete(*names)
    yield redis_client
    redis_client.delete(*names)


@pytest.mark.django_db
def test_the_metrics_sum_the_real_runs_and_date_the_last_success(client, dlqs):
    fill_dlq(dlqs, "alerter", [(40, "shed"), (39, "shed"), (38, "malformed")])
    (done,) = run_retention(OPS, "nightly", only="dlq")
    fill_dlq(dlqs, "moog", [(50, "http_400")])
    run_retention(OPS, "rehearsal", only="dlq", dry_run=True)  # counts for nothing
    dlqs.set(streams.dlq_stream("dead"), "not a stream")
    run_retention(OPS, "nightly", only="dlq")  # fails
    run_retention(OPS, "nightly", only="history")  # idle: nothing that old

    metrics = scraped(client)

    # 3, and the Moogsoft entry the failed run removed before it reached the broken dead queue.
    assert metrics[("mutt_retention_rows_deleted_total", (("store", "dlq"),))] == 4
    assert metrics[("mutt_retention_rows_deleted_total", (("store", "history"),))] == 0
    assert metrics[("mutt_retention_rows_deleted_total", (("store", "events"),))] == 0  # every policy, from zero
    assert metrics[("mutt_retention_rows_archived_total", ())] == 0
    assert metrics[("mutt_retention_errors_total", (("job", "dlq"),))] == 1
    assert metrics[("mutt_retention_errors_total", (("job", "history"),))] == 0
    last = metrics[("mutt_retention_last_success_timestamp_seconds", (("policy", "dlq"),))]
    assert done.finished_at is not None
    assert last == pytest.approx(done.finished_at.timestamp())  # the failed run after it does not move it
    assert ("mutt_retention_last_success_timestamp_seconds", (("policy", "history"),)) in metrics
    assert ("mutt_retention_last_success_timestamp_seconds", (("policy", "events"),)) not in metrics  # never
    assert metrics[("mutt_retention_legal_hold", ())] == 0


@pytest.mark.django_db(transaction=True)
def test_metrics_still_answer_when_the_database_cannot_be_reached(client, caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port
    try:
        response = client.get("/metrics")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved

    text = response.content.decode()
    assert response.status_code == 200
    assert "mutt_forwarder_dlq_depth" in text  # the rest of /metrics is there
    assert "mutt_retention_rows_deleted_total" not in text
    assert "retention metrics not exported: the run records cannot be read (OperationalError)" in caplog.text


@pytest.mark.django_db
def test_the_metrics_are_there_under_gunicorns_multiprocess_mode_too(client, dlqs, tmp_path, monkeypatch):
    fill_dlq(dlqs, "alerter", [(40, "shed")])
    run_retention(OPS, "nightly", only="dlq")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # as under `mutt up`

    metrics = scraped(client)

    assert metrics[("mutt_retention_rows_deleted_total", (("store", "dlq"),))] == 1
