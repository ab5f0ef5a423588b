"""``muttctl``: the operators' command line.

    python manage.py muttctl config list|get KEY|set KEY VALUE --reason TEXT|unset KEY|history KEY|watch KEY
    python manage.py muttctl apikey create NAME --scope ingest|list|revoke NAME

Every change goes through the same service functions as the admin and the API, with the actor
``cli:<--actor or OS user>``, so it is audited the same way. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from configcenter import services as key_services
from configcenter import settings_service
from configcenter.models import ApiKey, Scope
from configcenter.registry import InvalidSettingValue, UnknownSetting, get_definition
from core.audit import Actor


def print_table(out: Any, rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        out.write("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


class Command(BaseCommand):
    help = "Operate MUTT: runtime settings (config) and API keys (apikey)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument("--actor", default=None, help="Name recorded in the audit trail (default: OS user).")
        groups = parser.add_subparsers(dest="group", required=True)

        config = groups.add_parser("config", help="Runtime settings.").add_subparsers(dest="op", required=True)
        config.add_parser("list", help="Every setting with its value and default.")
        config.add_parser("get", help="One setting.").add_argument("key")
        setter = config.add_parser("set", help="Change a setting (audited).")
        setter.add_argument("key")
        setter.add_argument("value")
        setter.add_argument("--reason", required=True, help="Why; recorded in the history.")
        unsetter = config.add_parser("unset", help="Return a setting to its default (audited).")
        unsetter.add_argument("key")
        unsetter.add_argument("--reason", default="", help="Why; recorded in the history.")
        config.add_parser("history", help="Who changed a setting, when, why, from what to what.").add_argument("key")
        watch = config.add_parser("watch", help="Print the value each time this process sees it change.")
        watch.add_argument("key")
        watch.add_argument("--interval", type=float, default=0.05, help="Seconds between reads.")
        watch.add_argument("--count", type=int, default=0, help="Stop after this many changes (0: never).")

        secrets = groups.add_parser("secrets", help="Secrets (masked).").add_subparsers(dest="op", required=True)
        secrets.add_parser("status", help="Source and masked fingerprints of every secret.")
        secrets.add_parser("fingerprint", help="Fingerprint of a value read from standard input.")

        apikey = groups.add_parser("apikey", help="API keys.").add_subparsers(dest="op", required=True)
        create = apikey.add_parser("create", help="Create a key; it is printed once.")
        create.add_argument("name")
        create.add_argument("--scope", action="append", required=True, choices=Scope.values)
        create.add_argument("--description", default="")
        create.add_argument("--reason", default="")
        apikey.add_parser("list", help="Keys (never their secret part).")
        revoke = apikey.add_parser("revoke", help="Revoke a key by name.")
        revoke.add_argument("name")
        revoke.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json = options["json"]
        self.actor = Actor.cli(options["actor"])
        handler = getattr(self, f"{options['group']}_{options['op']}")
        try:
            handler(options)
        except (UnknownSetting, InvalidSettingValue) as exc:
            raise CommandError(str(exc)) from None

    def emit(self, data: Any, columns: list[str] | None = None) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(data, default=str, indent=2))
        elif columns is not None:
            print_table(self.stdout, data if isinstance(data, list) else [data], columns)
        else:
            self.stdout.write(str(data))

    # --- config -------------------------------------------------------------------------------

    def config_list(self, options: dict[str, Any]) -> None:
        self.emit(settings_service.describe(), ["key", "value", "default", "type", "bounds", "component"])

    def config_get(self, options: dict[str, Any]) -> None:
        row = settings_service.describe(options["key"])[0]
        self.emit(row, ["key", "value", "default", "type", "bounds", "updated_at"])

    def config_set(self, options: dict[str, Any]) -> None:
        settings_service.set_setting(options["key"], options["value"], actor=self.actor, reason=options["reason"])
        self.config_get(options)

    def config_unset(self, options: dict[str, Any]) -> None:
        settings_service.unset_setting(options["key"], actor=self.actor, reason=options["reason"])
        self.config_get(options)

    def config_history(self, options: dict[str, Any]) -> None:
        definition = get_definition(options["key"])
        rows = [
            {
                "when": entry.record.history_date.isoformat(timespec="seconds"),
                "actor": entry.record.history_actor,
                "reason": entry.record.history_change_reason or "",
                "old": "-" if entry.previous is None else _shown(definition, entry.previous.value),
                "new": _shown(definition, entry.record.value),
                "request_id": entry.record.history_request_id,
            }
            for entry in settings_service.history(options["key"])
        ]
        self.emit(rows, ["when", "actor", "reason", "old", "new"])

    def config_watch(self, options: dict[str, Any]) -> None:
        from configcenter.runtime import get_setting

        get_definition(options["key"])
        seen: Any = object()
        changes = 0
        while True:
            value = get_setting(options["key"])
            if value != seen:
                seen = value
                print(
                    json.dumps({"key": options["key"], "value": value, "observed_at": time.time()}),
                    flush=True,
                )
                changes += 1
                if options["count"] and changes > options["count"]:
                    return
            time.sleep(options["interval"])

    # --- secrets ------------------------------------------------------------------------------

    def secrets_status(self, options: dict[str, Any]) -> None:
        from core.secrets import secret_status

        self.emit(secret_status(), ["name", "source", "current", "next", "stale"])

    def secrets_fingerprint(self, options: dict[str, Any]) -> None:
        from core.secrets import fingerprint

        value = sys.stdin.read().rstrip("\n")
        if not value:
            raise CommandError("no value on standard input")
        self.emit(fingerprint(value))

    # --- apikey -------------------------------------------------------------------------------

    def apikey_create(self, options: dict[str, Any]) -> None:
        api_key, raw = key_services.create_api_key(
            actor=self.actor,
            name=options["name"],
            scopes=options["scope"],
            description=options["description"],
            reason=options["reason"],
        )
        self.emit({"name": api_key.name, "scopes": api_key.scopes, "key": raw} if self.as_json else raw)
        if not self.as_json:
            sys.stderr.write("Store this key now: it is not shown again.\n")

    def apikey_list(self, options: dict[str, Any]) -> None:
        rows = [
            {
                "name": k.name,
                "prefix": k.prefix,
                "scopes": ",".join(k.scopes),
                "created_at": k.created_at.isoformat(timespec="seconds"),
                "last_used_at": k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "",
                "revoked_at": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
            }
            for k in ApiKey.objects.all()
        ]
        self.emit(rows, ["name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"])

    def apikey_revoke(self, options: dict[str, Any]) -> None:
        api_key = ApiKey.objects.filter(name=options["name"]).first()
        if api_key is None:
            raise CommandError(f"no API key named {options['name']!r}")
        key_services.revoke_api_key(actor=self.actor, api_key=api_key, reason=options["reason"])
        self.emit(f"revoked {api_key.name}")


def _shown(definition: Any, value: Any) -> str:
    return f"(default {definition.to_text(definition.default)})" if value is None else definition.to_text(value)
