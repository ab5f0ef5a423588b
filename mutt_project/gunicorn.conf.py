"""Static gunicorn settings; ``mutt up`` passes bind address and worker count on the command line."""

from __future__ import annotations

import contextlib
from typing import Any

wsgi_app = "mutt_project.wsgi:application"
worker_class = "sync"
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 20000  # recycle workers now and then so a slow leak cannot grow without bound
max_requests_jitter = 2000
accesslog = "-"
logger_class = "mutt_project.gunicorn_logging.AccessLogger"  # no line per accepted ingest request
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
errorlog = "-"
preload_app = False


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's live gauges must not linger in the multiprocess metrics.
    from prometheus_client import multiprocess

    with contextlib.suppress(KeyError, ValueError):  # multiprocess mode off
        multiprocess.mark_process_dead(worker.pid)
