"""ASGI entry point, for servers that prefer it; MUTT's default is gunicorn over WSGI."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mutt_project.settings")
application = get_asgi_application()
