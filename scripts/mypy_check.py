"""Type check against a baseline that only shrinks: `make typecheck` (CI runs it after lint).

Runs mypy with the configuration in pyproject.toml and compares its errors with mypy-baseline.txt,
one known error a line as `path [code] message`, without line numbers so unrelated edits above an
error do not churn the file. It fails when
- mypy reports an error the baseline does not hold (a new error: fix it, don't add it), or
- the baseline holds an error mypy no longer reports (fixed: run with --update to drop it), or
- the baseline holds an error in a strict module (pyproject's overrides with disallow_untyped_defs):
  strict modules are clean, with no baseline.

`--update` rewrites the baseline from the current errors; use it only to drop fixed ones (a review
shows a baseline that grew). Settings are imported by the django-stubs plugin, so the environment
below points at services that are never contacted: mypy needs no PostgreSQL or Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "mypy-baseline.txt"
HEADER = (
    "# Known mypy errors outside the strict modules: `path [code] message`, one per occurrence.\n"
    "# It only shrinks: scripts/mypy_check.py fails on new errors and on entries that no longer occur\n"
    "# (then run `make typecheck-update`). Never add entries by hand.\n"
)
# Settings read these at import; nothing connects to them while mypy runs (the plugin only loads the apps).
_OFFLINE_ENV = {
    "DATABASE_URL": "postgres://mypy@127.0.0.1:9/mypy",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "MUTT_SECRET_KEY": "mypy-only-not-a-secret",
}


def run_mypy() -> list[str]:
    """Every error mypy reports for the configured files, normalised to `path [code] message`."""
    with tempfile.TemporaryDirectory(prefix="mutt-mypy-") as data_dir:
        # The settings module creates folders under MUTT_DATA_DIR: keep them out of the tree.
        env = {**os.environ, **_OFFLINE_ENV, "MUTT_DATA_DIR": data_dir}
        proc = subprocess.run(
            [sys.executable, "-m", "mypy", "--output", "json"],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    errors: list[str] = []
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if item["severity"] == "error":
            errors.append(f"{item['file']} [{item['code']}] {item['message']}")
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not errors):
        # 2 is a crash or a configuration error: no list of errors to compare.
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"mypy failed to run (exit {proc.returncode})")
    return sorted(errors)


def read_baseline() -> list[str]:
    if not BASELINE.exists():
        return []
    lines = BASELINE.read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def strictness() -> dict[str, bool]:
    """Each module pattern of the pyproject overrides that sets disallow_untyped_defs, and its value."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns: dict[str, bool] = {}
    for override in config["tool"]["mypy"].get("overrides", []):
        if "disallow_untyped_defs" in override:
            modules = override["module"]
            for pattern in [modules] if isinstance(modules, str) else modules:
                patterns[pattern] = bool(override["disallow_untyped_defs"])
    return patterns


def is_strict(path: str, patterns: dict[str, bool]) -> bool:
    """Whether the module at ``path`` is strict, by mypy's precedence: an exact name over a wildcard, and
    of two wildcards the longer (``ingest.*`` strict, ``ingest.middleware`` not: the latter wins)."""
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    best: tuple[bool, int] | None = None
    strict = False
    for pattern, value in patterns.items():
        if pattern.endswith(".*"):
            prefix = pattern.removesuffix(".*")
            matches = module == prefix or module.startswith(prefix + ".")
        else:
            matches = module == pattern
        rank = (not pattern.endswith(".*"), len(pattern))
        if matches and (best is None or rank > best):
            best, strict = rank, value
    return strict


def compare(current: list[str], baseline: list[str], patterns: dict[str, bool]) -> list[str]:
    """What fails the check, one line each: new errors, baseline entries that no longer occur (each
    counted: two equal errors need two entries), and baseline entries in strict modules."""
    new = Counter(current) - Counter(baseline)
    gone = Counter(baseline) - Counter(current)
    problems = [f"new: {line}" for line in sorted(new.elements())]
    problems += [f"fixed: {line}" for line in sorted(gone.elements())]
    problems += [
        f"strict module in baseline: {line}" for line in baseline if is_strict(line.split(" ", 1)[0], patterns)
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the baseline from the current errors")
    args = parser.parse_args()

    current = run_mypy()
    if args.update:
        BASELINE.write_text(HEADER + "".join(f"{line}\n" for line in current))
        print(f"mypy-baseline.txt: {len(current)} entries")
        return 0

    problems = compare(current, read_baseline(), strictness())
    for line in problems:
        print(line)
    if any(line.startswith("fixed: ") for line in problems):
        print("baseline entries no longer occur: run `make typecheck-update` and commit the smaller file")
    if any(line.startswith("new: ") for line in problems):
        print("new mypy errors: fix them (the baseline only shrinks)")
    if any(line.startswith("strict module") for line in problems):
        print("strict modules may not have baseline entries: fix them")
    if problems:
        return 1
    print(f"mypy: no new errors ({len(current)} known in mypy-baseline.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
