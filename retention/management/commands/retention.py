"""``manage.py retention``: what retention would do, doing it, and what it did.

    python manage.py retention plan [--only POLICY]
    python manage.py retention run --reason TEXT [--dry-run] [--only events|archives|dlq|history]
    python manage.py retention status
    python manage.py retention restore --from YYYY-MM --to YYYY-MM --reason TEXT
    python manage.py retention drop-restored --reason TEXT

``plan`` touches nothing. ``run`` goes through :func:`retention.service.run_retention` with the actor
``cli:<--actor or OS user>``, like the daily jobs, so each policy run is recorded; it shows a progress
line on a terminal and plain lines otherwise (a log, a pipe), and exits non-zero when a policy failed.
``restore`` and ``drop-restored`` belong to the archive (``retention.archive.cli``).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from importlib import import_module
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.template.defaultfilters import filesizeformat

from core.audit import Actor
from retention import service
from retention.models import RunOutcome
from retention.policies import PlanItem

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
# Plain progress lines (no terminal) at most this often: a log gets a heartbeat, not a line per batch.
PLAIN_PROGRESS_SECONDS = 10.0


def table(out: OutputWrapper, rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        out.write("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def month(value: str, option: str) -> str:
    if not _MONTH.match(value):
        raise CommandError(f"{option}: expected a month as YYYY-MM (e.g. 2026-01), got {value!r}")
    return value


class Progress:
    """A progress line rewritten in place on a terminal; a plain line now and then otherwise."""

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.shown_at = 0.0
        self.label = ""

    def update(self, done: int, total: int | None, label: str) -> None:
        if self.tty:
            if total:
                filled = int(30 * min(done, total) / total)
                text = f"\r{label}: [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
            else:
                text = f"\r{label}: {done} done"
            self.out.write(text.ljust(79), ending="")
            self.out.flush()
            self.label = label
            return
        now = time.monotonic()
        if label != self.label or now - self.shown_at >= PLAIN_PROGRESS_SECONDS:
            self.out.write(f"{label}: {done}{f'/{total}' if total else ''} done")
            self.label, self.shown_at = label, now

    def finish(self) -> None:
        if self.tty and self.label != "":
            self.out.write("")
        self.label = ""


class Command(BaseCommand):
    help = "Retention: plan, run, status, and restoring archived months of the event audit log."

    def add_arguments(self, parser: CommandParser) -> None:
        ops = parser.add_subparsers(dest="op", required=True)
        plan = ops.add_parser("plan", help="What each policy would do now (touches nothing).")
        plan.add_argument("--only", choices=list(service.POLICIES), help="One policy.")
        run = ops.add_parser("run", help="Run the policies now (each run recorded).")
        run.add_argument("--reason", required=True, help="Why; recorded on every run.")
        run.add_argument("--dry-run", action="store_true", help="Record each policy's plan; touch nothing.")
        run.add_argument("--only", choices=list(service.POLICIES), help="One policy.")
        run.add_argument("--actor", default=None, help="Name recorded on the runs (default: OS user).")
        ops.add_parser("status", help="Last run of each policy, the legal hold, the next scheduled runs.")
        restore = ops.add_parser("restore", help="Load archived months into a table for an investigation.")
        restore.add_argument("--from", required=True, help="First month, YYYY-MM.")
        restore.add_argument("--to", required=True, help="Last month, YYYY-MM (inclusive).")
        restore.add_argument("--reason", required=True, help="Why (the inquiry); recorded on the run.")
        restore.add_argument("--actor", default=None, help="Name recorded (default: OS user).")
        drop = ops.add_parser("drop-restored", help="Remove what restore loaded.")
        drop.add_argument("--reason", required=True, help="Why; recorded on the run.")
        drop.add_argument("--actor", default=None, help="Name recorded (default: OS user).")

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, options["op"].replace("-", "_"))
        handler(options)

    # --- plan ---------------------------------------------------------------------------------

    def plan(self, options: dict[str, Any]) -> None:
        planned = service.plan_each(only=options["only"])
        rows: list[dict[str, Any]] = []
        failed: list[str] = []
        for policy, items in planned.items():
            if isinstance(items, Exception):
                failed.append(f"{policy}: {type(items).__name__}: {items}")
                continue
            rows.extend(self._plan_row(policy, item) for item in items)
            if not items:
                rows.append({"policy": policy, "action": "nothing to do"})
        table(self.stdout, rows, ["policy", "store", "action", "target", "rows", "bytes", "from", "to", "note"])
        if any(item.deletes for items in planned.values() if isinstance(items, list) for item in items):
            self.stdout.write("* removes data: suspended while the legal hold (retention_legal_hold) is on")
        for line in failed:
            self.stderr.write(f"could not plan {line}")
        if failed:
            raise CommandError(f"{len(failed)} polic{'y' if len(failed) == 1 else 'ies'} could not plan")

    def _plan_row(self, policy: str, item: PlanItem) -> dict[str, Any]:
        return {
            "policy": policy,
            "store": item.store,
            "action": item.action + ("*" if item.deletes else ""),
            "target": item.target,
            "rows": "?" if item.rows is None else item.rows,
            "bytes": "?" if item.bytes is None else filesizeformat(item.bytes).replace("\xa0", " "),
            "from": when(item.start),
            "to": when(item.end),
            "note": item.note,
        }

    # --- run ----------------------------------------------------------------------------------

    def run(self, options: dict[str, Any]) -> None:
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason: say why retention runs (it is recorded on every run)")
        progress = Progress(self.stdout)
        runs = service.run_retention(
            Actor.cli(options["actor"]), reason, only=options["only"], dry_run=options["dry_run"], progress=progress
        )
        progress.finish()
        for run in runs:
            summary = f"{run.policy}: {run.outcome}{' (dry run)' if run.dry_run else ''}"
            if run.outcome == RunOutcome.FAILED:
                self.stderr.write(f"{summary}: {run.error}")
                continue
            counts = f"{run.rows_archived} rows archived, {run.rows_deleted} deleted"
            reasons = run.details.get("reasons")
            if reasons:
                counts += " (" + ", ".join(f"{k} {v}" for k, v in reasons.items()) + ")"
            if run.details.get("busy"):
                counts = run.details["busy"]
            self.stdout.write(f"{summary}: {counts}; run #{run.pk}")
            for item in run.details.get("plan", []) + run.details.get("held", []):
                verb = "would" if run.dry_run else "held back:"
                self.stdout.write(f"  {verb} {item['action']} {item['rows']} from {item['store']} ({item['target']})")
        failed = [run.policy for run in runs if run.outcome == RunOutcome.FAILED]
        if failed:
            raise CommandError(f"retention failed for {', '.join(failed)} (see the errors above and the run records)")

    # --- status -------------------------------------------------------------------------------

    def status(self, options: dict[str, Any]) -> None:
        hold = service.legal_hold()
        state = "ON: retention deletes nothing" if hold["on"] else "off"
        self.stdout.write(f"Legal hold: {state}")
        if hold["changed_at"]:
            self.stdout.write(f"  last changed {when(hold['changed_at'])} by {hold['changed_by']}: {hold['reason']}")
        self.stdout.write("")
        table(self.stdout, service.retention_settings(), ["setting", "value", "unit"])
        self.stdout.write("")
        rows: list[dict[str, Any]] = []
        for policy, run in service.last_runs().items():
            if run is None:
                rows.append({"policy": policy, "outcome": "never run"})
                continue
            rows.append({
                "policy": policy, "outcome": run.outcome, "started": when(run.started_at),
                "finished": when(run.finished_at), "by": run.actor, "archived": run.rows_archived,
                "deleted": run.rows_deleted, "error": run.error[:80],
            })  # fmt: skip
        table(self.stdout, rows, ["policy", "outcome", "started", "finished", "by", "archived", "deleted", "error"])
        self.stdout.write("")
        schedules = service.schedules()
        if not schedules:
            self.stdout.write("No schedule is defined (the scheduler creates them when it starts).")
            return
        table(
            self.stdout,
            [{"schedule": s["name"], "next run": when(s["next_run"]), "task": s["func"]} for s in schedules],
            ["schedule", "next run", "task"],
        )

    # --- the archive's ------------------------------------------------------------------------

    def restore(self, options: dict[str, Any]) -> None:
        first, last = month(options["from"], "--from"), month(options["to"], "--to")
        if first > last:
            raise CommandError(f"--from ({first}) is after --to ({last})")
        self._archive("restore", options)

    def drop_restored(self, options: dict[str, Any]) -> None:
        self._archive("drop_restored", options)

    def _archive(self, action: str, options: dict[str, Any]) -> None:
        if not options["reason"].strip():
            raise CommandError("--reason: say why (it is recorded on the run)")
        try:
            getattr(self._archive_cli(), action)({**options, "actor": Actor.cli(options["actor"])}, self.stdout)
        except ValueError as exc:  # the archive names the option at fault ("reason: ...", "from: ...")
            raise CommandError(f"--{exc}") from None
        except RuntimeError as exc:  # a store out of reach, a checksum that differs: recorded as a failed run
            raise CommandError(f"{action.replace('_', '-')} failed: {exc}") from None

    def _archive_cli(self) -> Any:
        try:
            return import_module("retention.archive.cli")
        except ImportError as exc:
            raise CommandError(f"restoring needs retention.archive.cli, which cannot be imported ({exc})") from None
