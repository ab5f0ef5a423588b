"""The alerter: ingest stream → compiled rules → audit rows → alert stream, one batch at a time.

``Alerter.step()`` does one unit of work and returns how many entries it finished; the
``run_alerter`` command loops over it. Per batch:

1. read up to ``alerter_batch_size`` entries (first any reclaimed from a crashed alerter, then new):
   ``intake``;
2. decode each entry and match it against the compiled rule snapshot (plain Python, no ORM per event),
   making its audit row in COPY's text format and its alert payload; an entry that cannot be decoded,
   or was delivered too often, goes to the alerter DLQ: ``evaluate``, ``copytext``;
3. write the audit rows in one transaction with one COPY. A redelivered event makes the COPY fail on
   the unique (event_id, event_time); the batch then goes in with INSERT ... ON CONFLICT DO NOTHING, so
   it changes nothing. A row the database refuses goes to the DLQ: ``audit``;
4. after commit, one Lua call adds the alerts (skipping event ids already alerted) and acknowledges
   the batch, so neither a crash nor a takeover can duplicate an alert: ``finish``;
5. count unmatched events per host and template for the flood detector (one Lua call): ``finish``.

``step`` holds the loop and what is in hand between steps; ``shedding`` stops consumption while the
alert backlog is too long; the rule snapshot is kept current by ``rules.listener``.

``run_alerter`` pipelines this, so the two cores of a small machine and Redis work at once: while this
process evaluates batch N (step 2), a writer thread audits batch N-1 (step 3, on its own database
connection; psycopg2 lets go of the GIL while PostgreSQL works), Redis runs steps 4-5 for batch N-2 and
answers the read of batch N+1, sent ahead. A batch is acknowledged only after its audit committed, and
everything in hand is finished at once when no batch follows, and on ``stop()``. A Redis error in steps
4-5 is logged and counted: the entries stay pending and are redone after the claim timeout. That adds
no audit row and no alert, though the flood counter may count the redone batch's unmatched events twice.

If the database is down nothing is acknowledged: the batch is kept and retried with backoff, and its
entries' idle time is refreshed so other alerters do not take them over while this one lives. The same
holds when the database refuses the batch for a reason of its own state rather than the data's (a
server left read-only by a failover, a full disk, a revoked privilege): only a data error (SQLSTATE
class 22, 23 or 54, see ``blames_the_data``) sends a row to the DLQ.
"""

from __future__ import annotations

from core.contracts import ALERTING, DEAD_LETTERED
from rules.alerter.audit import WRITER_SWITCH_INTERVAL, blames_the_data
from rules.alerter.copytext import audit_copy_line, copy_line, copy_text
from rules.alerter.evaluate import dead_letter_row
from rules.alerter.finish import DEDUP_TTL_SECONDS, Outcome, dedup_key
from rules.alerter.intake import CONSUMER_SWEEP_SECONDS
from rules.alerter.shedding import BACKLOG_CLEAR_SECONDS
from rules.alerter.step import Alerter

__all__ = [
    "ALERTING",
    "BACKLOG_CLEAR_SECONDS",
    "CONSUMER_SWEEP_SECONDS",
    "DEAD_LETTERED",
    "DEDUP_TTL_SECONDS",
    "WRITER_SWITCH_INTERVAL",
    "Alerter",
    "Outcome",
    "audit_copy_line",
    "blames_the_data",
    "copy_line",
    "copy_text",
    "dead_letter_row",
    "dedup_key",
]
