"""MUTT's settings with one URL more, ``/test-only/boom``, whose view raises: a real unhandled exception."""

from mutt_project.settings import *  # noqa: F403  (the same settings, one URL more)

ROOT_URLCONF = "tests.support.faulty_urls"
