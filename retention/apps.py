from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class RetentionConfig(AppConfig):
    name = "retention"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Once per `migrate` (sent once per app; this one only for retention's), after every migration.
        post_migrate.connect(_sync_schedules, sender=self, dispatch_uid="retention.sync_schedules")
        # In each cluster worker, before each task: which broker row it runs (a failed job's is due sooner).
        from django_q.signals import pre_execute

        from retention.scheduling import remember_task

        pre_execute.connect(remember_task, dispatch_uid="retention.remember_task")
        if sys.argv[1:2] == ["qcluster"]:  # `manage.py qcluster`: its forked processes end with it
            from retention.cluster import die_with_parent

            die_with_parent()


def _sync_schedules(using: str = "default", **kwargs: Any) -> None:
    """Every job gets its django-q2 schedule as soon as the tables exist (ADR-014): `mutt up` and every
    deployment migrate before starting the cluster."""
    from django.db import connections
    from django_q.models import Schedule

    from retention.scheduling import sync_schedules

    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return  # django_q not migrated (yet): a migrate to an earlier state
    sync_schedules()
