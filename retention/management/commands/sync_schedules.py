"""``python manage.py sync_schedules``: give every declared job its django-q2 schedule (ADR-014).

``migrate`` does the same after every run; this is for saying what it did, or after deleting a
schedule in the admin to have it back as the code declares it. Existing schedules are left as they
are (an operator's edits stay); schedules of jobs no longer declared are removed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from core.audit import Actor
from retention.scheduling import sync_schedules


class Command(BaseCommand):
    help = "Create the missing schedules of the declared jobs; remove those of jobs no longer declared."

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_schedules(actor=Actor.cli())
        for label, names in (
            ("created", report.created),
            ("removed", report.removed),
            ("kept", report.kept),
            ("kept with an interval other than the code's", report.differs),
        ):
            if names:
                self.stdout.write(f"{label}: {', '.join(names)}")
