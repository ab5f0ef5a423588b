"""The audit log records events dead-lettered before they were matched (delivered too often), with the reason.

A new column rather than a reuse of another: ``handling`` says ``dead_lettered`` and ``dead_letter_reason``
says why (for example ``max_deliveries: delivered 6 times``). When a replay audits the event later, its row
takes the real outcome and keeps the reason as the record that it was once dead-lettered. A constant default
adds the column to every partition without rewriting them, and the alerter's COPY, which does not name the
column, is unchanged.
"""

from django.db import migrations, models

FORWARD = "ALTER TABLE rules_eventauditlog ADD COLUMN dead_letter_reason varchar(200) NOT NULL DEFAULT ''"
BACKWARD = "ALTER TABLE rules_eventauditlog DROP COLUMN dead_letter_reason"


class Migration(migrations.Migration):
    dependencies = [("rules", "0004_hostpattern_globs")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, BACKWARD)],
            state_operations=[
                migrations.AddField(
                    model_name="eventauditlog",
                    name="dead_letter_reason",
                    field=models.CharField(blank=True, default="", max_length=200),
                )
            ],
        )
    ]
