"""Remediation: put transiently failed DLQ entries back into the pipeline, and give up on poison ones.

``Remediator.step()`` is one pass; ``run_remediation`` runs one every ``remediation_interval``. A pass:

- **Moogsoft DLQ**: entries that failed for a transient reason (``retries_exhausted``) go back to the alert
  stream with a fresh set of retries, but only when the shared circuit breaker is closed and a real GET of
  Moogsoft's health URL succeeds (never a fake event). Otherwise the pass is skipped and the reason counted.
- **Alerter DLQ**: entries shed under load (``shed``; ``database_error`` too, should the alerter ever
  dead-letter for that) and entries delivered more than ``alerter_max_deliveries`` times (``max_deliveries``:
  mostly alerters killed or stalled while holding them; a real poison event comes back and, after
  ``max_poison_retries`` replays, goes to the dead queue) go back to the ingest stream, only while the
  ingest backlog is below half of ``ingest_max_queue_depth`` and the alert backlog below the alerter's
  warning level, so that replaying does not bring on the backpressure or shedding that put them there. At
  most the room left below that half is replayed.
- Permanent failures (HTTP 4xx, malformed, processing errors) are never replayed:
  they need a person, in the admin.
- At most ``remediation_batch_size`` entries per queue, oldest first. An entry whose event would be
  replayed more than ``max_poison_retries`` times goes to the dead queue instead (decided atomically with
  the replay, see :mod:`delivery.dlq`), and the pass sends one notification for all of them.

Every change goes through :mod:`delivery.services` as ``system:remediation``, so it is in the DLQ audit.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import redis
import urllib3
from django.conf import settings
from django.db import connection
from prometheus_client import Counter, Gauge

from configcenter.runtime import get_setting
from core import outage, streams
from core.audit import Actor
from core.context import request_id_scope
from core.contracts import (
    ALERTER_QUEUE,
    DATABASE_ERROR,
    MAX_DELIVERIES,
    MOOG_QUEUE,
    RETRIES_EXHAUSTED,
    SHED,
    http_reason,
)
from core.redis import get_redis, key
from delivery import dlq, services
from delivery.breaker import CLOSED, CircuitBreaker
from delivery.destinations.moogsoft import is_local_mock
from delivery.notify import PoisonReport, notify_poison

logger = logging.getLogger("mutt.remediation")

ACTOR = Actor.system("remediation")
# Reasons worth another try without anyone changing anything.
TRANSIENT_REASONS: dict[str, tuple[str, ...]] = {
    # http_401/403: entries dead-lettered before a refused credential was treated as an outage
    MOOG_QUEUE: (RETRIES_EXHAUSTED, http_reason(401), http_reason(403)),
    ALERTER_QUEUE: (SHED, DATABASE_ERROR, MAX_DELIVERIES),
}

PASSES = Counter("mutt_remediation_passes_total", "Remediation passes run.")
SKIPPED = Counter(
    "mutt_remediation_skipped_total",
    "Queue passes skipped, by queue and reason (breaker_open, health_failed, health_unconfigured, "
    "ingest_backlog_high, alert_backlog_high; queue 'all': other_worker_active).",
    ["queue", "reason"],
)
ERRORS = Counter("mutt_remediation_errors_total", "Queue passes that failed (logged, retried next pass).", ["queue"])
DEPTH = Gauge("mutt_dlq_depth", "Entries in each dead-letter queue.", ["queue"])

# Delete the pass lock only if this worker still holds it (it may have expired and been taken since).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class PassResult:
    """What one pass did, per queue."""

    replayed: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    dead_event_ids: list[str] = field(default_factory=list)
    notification: str | None = None


def health_url() -> str | None:
    """The URL probed before replaying to Moogsoft: the setting, else the local mock's when alerts go there.

    With a real Moogsoft configured and no health URL, probing the mock would say nothing about Moogsoft,
    so there is no URL and the Moogsoft DLQ waits until one is set.
    """
    configured = str(get_setting("moog_health_url")).strip()
    if configured:
        return configured
    if is_local_mock(str(get_setting("moog_url"))):
        return f"http://127.0.0.1:{settings.MUTT_MOCK_MOOG_PORT}/health"
    return None


class Remediator:
    def __init__(self, *, client: redis.Redis | None = None, http: urllib3.PoolManager | None = None) -> None:
        self.client = client or get_redis()
        self.breaker = CircuitBreaker(self.client)
        # Our own timeouts, no automatic retries: one failed probe means "not now", not "try harder".
        self.http = http or urllib3.PoolManager(num_pools=2, maxsize=1, retries=False)
        self.lock_key = key("remediation", "lock")
        self.lock_token = uuid.uuid4().hex
        self._outages: dict[str, outage.OutageReporter] = {}  # queue -> the outage its last pass failed on

    def step(self) -> PassResult:
        """One remediation pass over both queues; one failing queue does not stop the other."""
        result = PassResult()
        if not self._lock():
            # Another remediation worker is in a pass: two at once would probe twice and race for entries.
            self._skip(result, "all", "other_worker_active", 0)
            return result
        try:
            with request_id_scope():  # the audit rows and log lines of one pass share a request id
                for queue, remediate in ((MOOG_QUEUE, self._remediate_moog), (ALERTER_QUEUE, self._remediate_alerter)):
                    try:
                        remediate(result)
                        self._ended_outage(queue, result)
                    except Exception as exc:
                        ERRORS.labels(queue).inc()
                        result.failed.append(queue)
                        reporter = outage.reporter_for(exc)
                        if reporter is None:
                            logger.exception("remediation of the %s DLQ failed; next pass retries", queue)
                        else:  # an outage: one line when it starts, not a traceback per pass
                            reporter.failed(exc, doing=f"the {queue} DLQ waits for the next pass")
                            self._outages[queue] = reporter
                if result.dead:
                    result.notification = notify_poison(self._poison_report(result), http=self.http)
                self.report_depths()
        finally:
            self._unlock()
        PASSES.inc()
        return result

    def _ended_outage(self, queue: str, result: PassResult) -> None:
        """A pass over ``queue`` after one that failed on an outage: Redis answered it; the database did if
        the pass replayed something (its audit row), else one query asks it, so the outage ends with the first
        pass after it whatever that pass found to do (an emptied queue, a breaker open). A query that fails
        raises: the pass counts as failed on the outage still going on."""
        reporter = self._outages.get(queue)
        if reporter is None:
            return
        if reporter is outage.POSTGRESQL and queue not in result.replayed:
            connection.close_if_unusable_or_obsolete()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        del self._outages[queue]
        reporter.recovered()

    def _lock(self) -> bool:
        # Longer than any pass can take (two probes at the longest timeout), so a crashed pass frees it.
        ttl = int(max(60.0, 2 * get_setting("moog_timeout") + 30))
        return bool(self.client.set(self.lock_key, self.lock_token, nx=True, ex=ttl))

    def _unlock(self) -> None:
        try:
            self.client.eval(_RELEASE, 1, self.lock_key, self.lock_token)
        except redis.RedisError:
            logger.warning("could not release the remediation lock; it expires on its own", exc_info=True)

    def report_depths(self) -> None:
        try:
            for queue, depth in dlq.depths(self.client).items():
                DEPTH.labels(queue).set(depth)
        except redis.RedisError:
            logger.warning("could not read DLQ depths", exc_info=True)

    # --- the queues ---------------------------------------------------------------------------

    def _remediate_moog(self, result: PassResult) -> None:
        candidates = dlq.oldest_entries(
            self.client, MOOG_QUEUE, TRANSIENT_REASONS[MOOG_QUEUE], get_setting("remediation_batch_size")
        )
        if not candidates:
            return
        if self.breaker.snapshot().state != CLOSED:
            self._skip(result, MOOG_QUEUE, "breaker_open", len(candidates))
            return
        url = health_url()
        if url is None:
            self._skip(result, MOOG_QUEUE, "health_unconfigured", len(candidates))
            return
        if not self._healthy(url):
            self._skip(result, MOOG_QUEUE, "health_failed", len(candidates))
            return
        self._replay(result, MOOG_QUEUE, candidates, "automatic replay: Moogsoft is healthy again")

    def _remediate_alerter(self, result: PassResult) -> None:
        candidates = dlq.oldest_entries(
            self.client, ALERTER_QUEUE, TRANSIENT_REASONS[ALERTER_QUEUE], get_setting("remediation_batch_size")
        )
        if not candidates:
            return
        room = get_setting("ingest_max_queue_depth") // 2 - streams.backlog(self.client, streams.ingest_stream())
        if room <= 0:
            self._skip(result, ALERTER_QUEUE, "ingest_backlog_high", len(candidates))
            return
        # The alerter sheds on the longest of its destinations' streams: replays would be shed again.
        alert_streams = [streams.destination_stream(name) for name in settings.MUTT_DESTINATIONS]
        alert_backlog = max(streams.backlogs(self.client, alert_streams))
        if alert_backlog > get_setting("alerter_queue_warn_threshold"):
            self._skip(result, ALERTER_QUEUE, "alert_backlog_high", len(candidates))
            return
        self._replay(result, ALERTER_QUEUE, candidates[:room], "automatic replay: load is back to normal")

    def _replay(self, result: PassResult, queue: str, candidates: list[dlq.DlqEntry], reason: str) -> None:
        reasons = sorted({entry.reason for entry in candidates})
        report = services.replay_entries(
            actor=ACTOR,
            queue=queue,
            entry_ids=[entry.id for entry in candidates],
            reason=f"{reason} (transient failure: {', '.join(reasons)})",
            max_replays=get_setting("max_poison_retries"),
            client=self.client,
        )
        result.replayed[queue] = len(report.replayed)
        if report.dead:
            result.dead[queue] = len(report.dead)
            result.dead_event_ids += [report.result.event_keys[entry_id] for entry_id in report.dead]

    def _skip(self, result: PassResult, queue: str, reason: str, waiting: int) -> None:
        SKIPPED.labels(queue, reason).inc()
        result.skipped[queue] = reason
        logger.info("not replaying the %s DLQ now: %s", queue, reason, extra={"waiting": waiting})

    def _healthy(self, url: str) -> bool:
        timeout = get_setting("moog_timeout")
        try:
            response = self.http.request(
                "GET", url, timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout), redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            logger.warning("Moogsoft health probe failed (%s)", type(exc).__name__)
            return False
        if 200 <= response.status < 300:
            return True
        logger.warning("Moogsoft health probe answered HTTP %s", response.status)
        return False

    def _poison_report(self, result: PassResult) -> PoisonReport:
        return PoisonReport(
            count=sum(result.dead.values()),
            queues=dict(result.dead),
            sample_event_ids=result.dead_event_ids[:10],
            max_replays=get_setting("max_poison_retries"),
        )
