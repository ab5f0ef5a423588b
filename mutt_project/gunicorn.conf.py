"""Static gunicorn settings; ``mutt up`` passes bind address and worker count on the command line."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from core.envparse import env_int, env_path

_BASE_DIR = Path(__file__).resolve().parent.parent

wsgi_app = "mutt_project.wsgi:application"
# Threads, with deadlines for reading a request: slow clients hold a thread each, never the worker
# (ADR-004). Each thread that touched the database keeps its own connection (CONN_MAX_AGE).
worker_class = "mutt_project.gunicorn_worker.ThreadWorker"
threads = env_int(os.environ, "MUTT_HTTP_THREADS", 16, minimum=1, maximum=256)
timeout = 30
graceful_timeout = 20
keepalive = 5  # also how long a new connection may stay silent before its first byte
max_requests = 20000  # recycle workers now and then so a slow leak cannot grow without bound
max_requests_jitter = 2000
accesslog = "-"
# MUTT's line format (MUTT_LOG_FORMAT) with request ids; no line per accepted ingest request.
logger_class = "mutt_project.gunicorn_logging.AccessLogger"
errorlog = "-"
preload_app = False

# gunicorn's control socket (``gunicornc``) defaults to $XDG_RUNTIME_DIR or $HOME/.gunicorn, one path
# for every instance of a user: stopping one instance removed another's socket. It lives in this
# instance's data folder instead (the settings resolve MUTT_DATA_DIR the same way). A Unix socket path
# is limited to 107 bytes; a data folder too deep for one runs without a control socket.
control_socket = str(env_path(os.environ, "MUTT_DATA_DIR", _BASE_DIR / ".mutt", base=_BASE_DIR) / "gunicorn.ctl")
control_socket_disable = len(os.fsencode(control_socket)) > 100


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's live gauges must not linger in the multiprocess metrics.
    from prometheus_client import multiprocess

    # KeyError/ValueError/TypeError: multiprocess mode off (PROMETHEUS_MULTIPROC_DIR unset); an exception
    # here would end gunicorn's master.
    with contextlib.suppress(KeyError, ValueError, TypeError):
        multiprocess.mark_process_dead(worker.pid)
