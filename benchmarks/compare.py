"""``python -m benchmarks --compare REV``: this working tree against another revision, in turns.

On a shared machine the speed of the same code drifts by a factor of two or more within hours (the
speed reference printed after each run shows it), so two runs an hour apart say little about a
change. Compare mode measures both versions in one window. REV is exported (``git archive``) into the
data folder, then each round runs the chosen stages once with each version, in ABBA order: this tree
first in odd rounds, REV first in even ones, so that over an even number of rounds (4 by default) a
steady drift weighs on both alike. Each run is a child ``python -m benchmarks --runs 1`` in its own
tree and data folder (each version migrates its own database), at the same sizes, with this Python:
REV needs a harness with the same options and no requirement this virtualenv lacks.

The report gives, per figure, each side's median over the rounds, their ratio (this tree / REV), and
in how many rounds this tree did better (and in how many the two were equal), which says more than the
ratio when the machine is noisy. Each child runs in a session of its own: a Ctrl-C or SIGTERM reaches
this process only, which passes one SIGTERM on to the child and waits while it stops its processes and
services.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.env import BASE_DIR

logger = logging.getLogger("benchmarks")

THIS = "this tree"
DEFAULT_ROUNDS = 4  # even, so that ABBA puts each version first equally often
CHILD_STOP_SECONDS = 120  # a stopped child harness stops its processes and embedded services first
# Figures of a stage entry that describe the run rather than the code under test.
_NOT_COMPARED = {"stage_seconds", "other_processes_cores"}
# Figures where less is better; for every other figure more is.
_LOWER_IS_BETTER = ("_ms", "us_per_event", "rss_mb", "cost_ratio", "ratio_10000_vs_10", "lost")


@dataclass(frozen=True)
class Side:
    name: str  # THIS or the short commit
    tree: Path
    data_dir: Path


def resolve(rev: str) -> str:
    """The full commit ``rev`` names in this checkout; SystemExit with git's message if none."""
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"--compare: {rev!r} names no commit in {BASE_DIR}")
    return result.stdout.strip()


def export(commit: str, into: Path) -> Path:
    """The files of ``commit`` under ``into/tree`` (kept for the next comparison with the same commit)."""
    tree = into / "tree"
    done = into / ".exported"
    if done.exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=BASE_DIR, capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--compare: git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    done.write_text(commit)
    return tree


def order(round_number: int, sides: tuple[Side, Side]) -> tuple[Side, Side]:
    """ABBA: this tree first in odd rounds (1, 3, ...), the other revision first in even ones."""
    return sides if round_number % 2 == 1 else (sides[1], sides[0])


def figures(results: dict[str, Any], stages: list[str]) -> dict[str, float]:
    """``"stage.figure" -> value`` for every numeric top-level figure of the given stages."""
    found = {}
    for stage in stages:
        entry = results.get(stage)
        if not isinstance(entry, dict):
            continue
        for name, value in entry.items():
            if name in _NOT_COMPARED or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            found[f"{stage}.{name}"] = float(value)
    return found


def lower_is_better(figure: str) -> bool:
    name = figure.split(".", 1)[-1]
    return any(part in name for part in _LOWER_IS_BETTER)


def summarise(rounds: list[dict[str, dict[str, float]]], other: str) -> list[dict[str, Any]]:
    """Per figure measured on both sides in at least one round: medians, ratio and rounds won."""
    names = sorted({figure for measured in rounds for figure in measured.get(THIS, {})})
    rows = []
    for figure in names:
        pairs = [
            (measured[THIS][figure], measured[other][figure])
            for measured in rounds
            if figure in measured.get(THIS, {}) and figure in measured.get(other, {})
        ]
        if not pairs:
            continue
        this_median = statistics.median(a for a, _ in pairs)
        other_median = statistics.median(b for _, b in pairs)
        better = (lambda a, b: a < b) if lower_is_better(figure) else (lambda a, b: a > b)
        ties = sum(1 for a, b in pairs if a == b)
        rows.append({
            "figure": figure,
            THIS: round(this_median, 3),
            other: round(other_median, 3),
            "ratio": round(this_median / other_median, 3) if other_median else None,
            "rounds_won": sum(1 for a, b in pairs if better(a, b)),
            "rounds_tied": ties,
            "rounds": len(pairs),
            "per_round": [[a, b] for a, b in pairs],
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], other: str) -> str:
    header = ("figure", THIS, f"REV {other}", f"{THIS} / REV", "rounds this tree did better")
    lines = [header]
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        won = f"{row['rounds_won']}/{row['rounds']}"
        if row["rounds_tied"]:
            won += f", {row['rounds_tied']} equal"
        if lower_is_better(row["figure"]):
            won += " (less is better)"
        lines.append((row["figure"], f"{row[THIS]:,.2f}", f"{row[other]:,.2f}", ratio, won))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def child_argv(args: Any, output: Path, data_dir: Path) -> list[str]:
    """The child run's command line: this run's stages and sizes, one run, its own output and data."""
    argv = [sys.executable, "-m", "benchmarks", "--stages", ",".join(args.stage_list), "--runs", "1"]
    argv += ["--output", str(output), "--data-dir", str(data_dir)]
    if args.smoke:
        argv.append("--smoke")
    if args.durable:
        argv.append("--durable")
    for option in ("events", "alerts", "seconds", "rate", "web_workers"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    return argv


def run(args: Any, data_dir: Path, output: Path) -> int:
    commit = resolve(args.compare)
    folder = data_dir / "compare"
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / ".compare.lock"):
        return _compare(args, data_dir, folder, commit, output)


def _compare(args: Any, data_dir: Path, folder: Path, commit: str, output: Path) -> int:
    other = commit[:12]
    # This tree keeps the data folder it uses for ordinary runs; REV gets one of its own (its migrations).
    sides = (Side(THIS, BASE_DIR, data_dir), Side(other, export(commit, folder / other), folder / other / "data"))
    rounds: list[dict[str, dict[str, float]]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mutt-compare-") as scratch:
        for number in range(1, args.rounds + 1):
            measured: dict[str, dict[str, float]] = {}
            for side in order(number, sides):
                result_file = Path(scratch) / f"{number}-{len(measured)}.json"
                logger.info("round %d of %d: %s", number, args.rounds, side.name)
                returncode = _run_child(child_argv(args, result_file, side.data_dir), side.tree)
                if not result_file.exists():
                    failures.append(f"round {number}, {side.name}: exit {returncode}, no results")
                    continue
                results = orjson.loads(result_file.read_bytes())
                failures += [f"round {number}, {side.name}: {problem}" for problem in results.get("problems", [])]
                measured[side.name] = figures(results, args.stage_list)
            rounds.append(measured)
    rows = summarise(rounds, other)
    output.write_bytes(
        orjson.dumps(
            {"this_tree": _head(), "rev": commit, "stages": args.stage_list, "rounds": args.rounds,
             "figures": rows, "problems": failures},
            option=orjson.OPT_INDENT_2,
        )
    )  # fmt: skip
    print()
    print(table(rows, other))
    print(f"\n{len(failures)} problem(s); results in {output}")
    for failure in failures:
        print(f"  PROBLEM: {failure}")
    return 1 if failures or not rows else 0


def _run_child(argv: list[str], cwd: Path) -> int:
    """Run one child harness; if this process is stopped meanwhile, stop the child the way that lets it
    stop its own children and services (SIGTERM, then wait), never by killing it outright."""
    child = subprocess.Popen(argv, cwd=cwd, start_new_session=True)  # a terminal's Ctrl-C reaches us only
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


@contextlib.contextmanager
def _exclusive(path: Path) -> Any:
    """Keep a second comparison off this data folder (it would export over this one's tree)."""
    with path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another comparison is running in {path.parent}") from None
        yield


def _head() -> str | None:
    from benchmarks.report import git_commit

    return git_commit()
