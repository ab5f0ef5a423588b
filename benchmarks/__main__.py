"""``python -m benchmarks``: measure every pipeline stage and write ``benchmarks/results.json``.

    python -m benchmarks                       # everything, full sizes (make bench, ~15 minutes)
    python -m benchmarks --smoke               # every figure at tiny sizes, under a minute (make bench-smoke)
    python -m benchmarks --stages alerter --events 50000 --runs 3
    python -m benchmarks --report [--markdown] # print the table of an existing results file
    python -m benchmarks --compare main --stages alerter --rounds 4   # this tree against main, in turns

Only a full run at the default sizes writes ``benchmarks/results.json``; anything else (smoke, a subset
of stages, other sizes) writes the git-ignored ``benchmarks/results.local.json`` unless ``--output``
says otherwise. Exit status 1 when a stage failed, a figure is missing, an accepted event was lost or
a process was left behind; speed targets are reported (and profiled when they fail), not enforced.
``--compare`` writes ``benchmarks/compare.local.json`` (see ``benchmarks/compare.py``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks import compare, profiling, reference, report
from benchmarks.env import BASE_DIR, BenchEnv
from benchmarks.plan import STAGES, Plan
from benchmarks.procs import ForeignCpu

logger = logging.getLogger("benchmarks")

RESULTS = BASE_DIR / "benchmarks" / "results.json"
LOCAL_RESULTS = BASE_DIR / "benchmarks" / "results.local.json"
COMPARE_RESULTS = BASE_DIR / "benchmarks" / "compare.local.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated subset of {', '.join(STAGES)}.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes, one run each: checks the harness works.")
    parser.add_argument("--runs", type=int, help="Runs per figure (the figure is their median; default 3).")
    parser.add_argument("--events", type=int, help="Events pre-loaded per alerter run (default 200,000).")
    parser.add_argument("--alerts", type=int, help="Alerts pre-loaded per forwarder run (default 50,000).")
    parser.add_argument("--seconds", type=float, help="Seconds per ingest mode and end-to-end run (20 / 30).")
    parser.add_argument("--rate", type=float, help="End-to-end offered events/s (default 5,000).")
    parser.add_argument("--web-workers", type=int, help="gunicorn workers for ingest and end to end (default: cores).")
    parser.add_argument("--output", type=Path, help="Results file (default: see above).")
    parser.add_argument("--data-dir", type=Path, help="Data folder (default .mutt/bench; smoke: a temporary one).")
    parser.add_argument("--durable", action="store_true", help="Embedded services with fsync and AOF, as `mutt up`.")
    parser.add_argument("--profile", action="store_true", help="Profile alerter, ingest and forwarder in any case.")
    parser.add_argument("--report", action="store_true", help="Only print the table of an existing results file.")
    parser.add_argument("--markdown", action="store_true", help="With --report: a Markdown table (for the README).")
    parser.add_argument("--compare", metavar="REV", help="Measure this tree against git revision REV, in turns.")
    parser.add_argument("--rounds", type=int, help="With --compare: rounds, each running both versions (default 4).")
    args = parser.parse_args(argv)
    if args.web_workers is not None and args.web_workers < 1:
        parser.error("--web-workers must be at least 1")
    if args.compare is None and args.rounds is not None:
        parser.error("--rounds goes with --compare")
    if args.compare is not None:
        if args.runs is not None or args.report or args.profile:
            parser.error("--compare runs each version once per round: use --rounds, not --runs, --report or --profile")
        args.rounds = compare.DEFAULT_ROUNDS if args.rounds is None else args.rounds
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
    args.stage_list = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = sorted(set(args.stage_list) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        stored = orjson.loads((args.output or RESULTS).read_bytes())
        stages = [s for s in STAGES if s in stored]
        print(report.markdown_table(stored, stages) if args.markdown else report.text_table(stored, stages))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if args.compare is not None:
        return run_compare(args)
    base = Plan.small() if args.smoke else Plan.full()
    plan = base.with_overrides(
        runs=args.runs,
        alerter_events=args.events,
        forwarder_alerts=args.alerts,
        ingest_seconds=args.seconds,
        e2e_seconds=args.seconds,
        e2e_rate=args.rate,
        web_workers=args.web_workers,
    )
    canonical = plan == Plan.full() and args.stage_list == list(STAGES)
    output = args.output or (RESULTS if canonical else LOCAL_RESULTS)
    temporary = args.smoke and args.data_dir is None
    if args.data_dir is not None:
        data_dir = args.data_dir
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="mutt-bench-")) if temporary else BASE_DIR / ".mutt" / "bench"
    # SIGTERM must unwind like Ctrl-C, so the finally blocks stop every child and service.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    started = time.monotonic()
    results: dict[str, Any] = {"plan": plan.describe(), "stages": args.stage_list}
    with BenchEnv(data_dir, temporary=temporary, durable=args.durable) as env:
        results["machine"] = report.machine(env)
        results["reference"] = {"start": reference.measure()}
        logger.info("data folder %s, Redis prefix %s", env.data_dir, env.prefix)
        for stage in args.stage_list:
            results[stage] = run_stage(env, plan, stage)
        results["targets"] = report.evaluate(results)
        if not plan.smoke:  # where the time goes, for each throughput target that failed
            profiling.profile_failures(env, results, plan, force=args.profile)
        results["reference"]["end"] = reference.measure()
    results["leftover_processes"] = env.leftovers
    results["duration_s"] = round(time.monotonic() - started, 1)
    found = report.problems(results, args.stage_list)
    results["problems"] = found
    report.write(output, results)
    print()
    print(report.text_table(results, args.stage_list))
    if summary := profiling.describe(results):
        print(f"\n{summary}")
    if busy := report.interference(results, args.stage_list):
        print(f"\n{busy}")
    print(f"\n{report.speed_reference(results)}")
    print(f"\n{len(found)} problem(s); results in {output}; took {results['duration_s']:.0f}s")
    for problem in found:
        print(f"  PROBLEM: {problem}")
    return 1 if found else 0


def run_compare(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C: the child (in a session of its own) is then stopped and waited for.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.data_dir is not None:
        return compare.run(args, args.data_dir.resolve(), args.output or COMPARE_RESULTS)
    if not args.smoke:
        return compare.run(args, BASE_DIR / ".mutt" / "bench", args.output or COMPARE_RESULTS)
    with tempfile.TemporaryDirectory(prefix="mutt-bench-compare-") as folder:
        return compare.run(args, Path(folder), args.output or COMPARE_RESULTS)


def run_stage(env: BenchEnv, plan: Plan, stage: str) -> dict[str, Any]:
    logger.info("stage %s ...", stage)
    started = time.monotonic()
    foreign = ForeignCpu()
    try:
        entry = importlib.import_module(f"benchmarks.stages.{stage}").run(env, plan)
    except Exception as exc:
        logger.exception("stage %s failed", stage)
        entry = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    finally:
        env.children.stop_all()  # nothing a stage started outlives it
    entry["stage_seconds"] = round(time.monotonic() - started, 1)
    entry["other_processes_cores"] = foreign.cores()
    logger.info("stage %s done in %.0fs", stage, entry["stage_seconds"])
    return entry


if __name__ == "__main__":
    sys.exit(main())
