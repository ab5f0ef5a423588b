"""Settings for the ingest stage's gunicorn: MUTT's own, plus the bare view of ``benchmarks.urls``."""

from mutt_project.settings import *  # noqa: F403  (the same settings, one URL more)
from mutt_project.settings import MUTT_CSP_EXEMPT_ROUTES

ROOT_URLCONF = "benchmarks.urls"
# The ceiling skips the Content Security Policy as ingest does, so it measures what ingest skips too.
MUTT_CSP_EXEMPT_ROUTES = MUTT_CSP_EXEMPT_ROUTES | {"bench-bare"}
