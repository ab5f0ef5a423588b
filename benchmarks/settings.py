"""Settings for the ingest stage's gunicorn: MUTT's own, plus the bare view of ``benchmarks.urls``."""

from mutt_project.settings import *  # noqa: F403  (the same settings, one URL more)

ROOT_URLCONF = "benchmarks.urls"
