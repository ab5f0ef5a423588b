"""The web tier's ``/metrics``: gunicorn's workers' own metrics plus the figures every process shares
through Redis, read at scrape time.

Those shared figures are the delivery state (breaker, retries, held alerts: ``delivery.status``), the
scheduled jobs' runs (``retention.job_metrics``: the jobs run in django-q2's forked workers, which no
scraper reaches) and retention's counts, read from its run records in PostgreSQL (``retention.metrics``).
They are exported here only, by the one process every deployment scrapes, so a sum over scrape targets
counts each run once. The wiring composes them: neither app imports the other.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import REGISTRY

from delivery.status import COLLECTOR as DELIVERY
from retention.job_metrics import COLLECTOR as JOBS
from retention.metrics import COLLECTOR as RETENTION


def metrics_view(request: HttpRequest) -> HttpResponse:
    """gunicorn's workers' metrics (multiprocess files, when PROMETHEUS_MULTIPROC_DIR is set, as under
    ``mutt up``) and the delivery collector; else this process's registry, which holds it. Then the
    jobs' and retention's collectors, in a registry of this view's own: never in the global registry,
    which every worker's metrics port serves (the workers import the URL conf for their system checks),
    so that a sum over scrape targets counts each job run once.

    django_prometheus's own view builds a registry of the multiprocess files alone, which leaves out
    any collector that reads its values at scrape time."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(DELIVERY)
    else:
        registry = REGISTRY
    scraped = CollectorRegistry()
    scraped.register(JOBS)
    scraped.register(RETENTION)  # queries PostgreSQL: only this view pays for it
    body = generate_latest(registry) + generate_latest(scraped)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
