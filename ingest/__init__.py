"""HTTP ingest. ``ROUTE_ENDINGS``: how every ingest path ends (see ingest/urls.py); kept here, free of
Django imports, so gunicorn's access logger can use it before the application loads."""

ROUTE_ENDINGS = ("/ingest", "/ingest/")
