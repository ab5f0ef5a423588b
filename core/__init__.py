"""MUTT's shared plumbing, below every app: Redis and PostgreSQL connections, secrets and their
rotation, streams, ids, request context, logging, the audit actor, the worker and API bases.

``core`` imports no app (rules, ingest, delivery, configcenter, retention) and not the project's
wiring (``mutt_project``); the import check in CI (``lint-imports``, see pyproject.toml) holds it to
that. ``core.contracts`` is also free of Django. See docs/adr/ADR-010-layers.md.
"""
