"""Make the audit log cheaper to write: ``json`` for the raw event, one index fewer.

- ``raw`` becomes ``json``: it keeps the event's text exactly as ingest accepted it (checked for
  syntax, not re-encoded), which is what an audit trail should hold, and it halves what PostgreSQL
  spends per row; parsing every event into ``jsonb`` was the largest single cost of the alerter's
  COPY. Nothing queries inside ``raw``; the indexed columns carry everything searched on.
- The primary key becomes (event_time, id): still unique, and it now also serves time-ordered and
  time-range reads (the admin's default order), so the separate ``event_time`` index goes. Each row
  written maintains five indexes instead of six.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE rules_eventauditlog ALTER COLUMN raw TYPE json USING raw::json;
ALTER TABLE rules_eventauditlog DROP CONSTRAINT rules_eventauditlog_pkey;
ALTER TABLE rules_eventauditlog ADD CONSTRAINT rules_eventauditlog_pkey PRIMARY KEY (event_time, id);
DROP INDEX IF EXISTS rules_eventauditlog_time;
"""
BACKWARD = """
CREATE INDEX rules_eventauditlog_time ON rules_eventauditlog (event_time);
ALTER TABLE rules_eventauditlog DROP CONSTRAINT rules_eventauditlog_pkey;
ALTER TABLE rules_eventauditlog ADD CONSTRAINT rules_eventauditlog_pkey PRIMARY KEY (id, event_time);
ALTER TABLE rules_eventauditlog ALTER COLUMN raw TYPE jsonb USING raw::jsonb;
"""


class Migration(migrations.Migration):
    dependencies = [("rules", "0002_event_audit_log")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
