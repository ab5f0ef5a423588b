"""``python -m benchmarks --compare``: the order of turns, what is compared and how it is summed up.

The whole mode (a real revision exported and both versions run in turns) runs in CI, in `.ci/run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.__main__ import parse_args
from benchmarks.env import BASE_DIR

A = compare.Side(compare.THIS, Path("/a"), Path("/a/data"))
B = compare.Side("0123456789ab", Path("/b"), Path("/b/data"))


def test_turns_alternate_abba_so_a_steady_drift_weighs_on_both_versions_alike():
    assert [tuple(side.name for side in compare.order(n, (A, B))) for n in (1, 2, 3, 4)] == [
        (A.name, B.name),
        (B.name, A.name),
        (A.name, B.name),
        (B.name, A.name),
    ]


def test_figures_are_the_numeric_top_level_values_of_the_stages_asked_for():
    results = {
        "alerter": {
            "events_per_s_1000_rules": 30_000,
            "rss_mb_10000_rules": 120.5,
            "stage_seconds": 80.0,  # describes the run
            "other_processes_cores": 0.01,
            "runs": {"events_per_s_1000_rules": [1, 2, 3]},
            "profiled": True,
        },
        "ingest": {"single_requests_per_s": 2_000},
    }
    assert compare.figures(results, ["alerter"]) == {
        "alerter.events_per_s_1000_rules": 30_000.0,
        "alerter.rss_mb_10000_rules": 120.5,
    }


def test_summary_gives_each_sides_median_their_ratio_and_the_rounds_each_did_better():
    other = B.name
    rounds = [
        {compare.THIS: {"alerter.events_per_s_1000_rules": 33_000, "end_to_end.p99_ms": 20.0},
         other: {"alerter.events_per_s_1000_rules": 30_000, "end_to_end.p99_ms": 25.0}},
        {compare.THIS: {"alerter.events_per_s_1000_rules": 20_000, "end_to_end.p99_ms": 30.0},
         other: {"alerter.events_per_s_1000_rules": 22_000, "end_to_end.p99_ms": 28.0}},
        {compare.THIS: {"alerter.events_per_s_1000_rules": 36_000, "end_to_end.p99_ms": 10.0},
         other: {"alerter.events_per_s_1000_rules": 32_000}},  # a run that lost its p99: left out
    ]  # fmt: skip
    rows = {row["figure"]: row for row in compare.summarise(rounds, other)}
    alerter = rows["alerter.events_per_s_1000_rules"]
    assert (alerter[compare.THIS], alerter[other], alerter["ratio"]) == (33_000, 30_000, 1.1)
    assert (alerter["rounds_won"], alerter["rounds"]) == (2, 3)
    p99 = rows["end_to_end.p99_ms"]
    assert (p99[compare.THIS], p99[other], p99["rounds_won"], p99["rounds"]) == (25.0, 26.5, 1, 2), "less is better"
    assert p99["per_round"] == [[20.0, 25.0], [30.0, 28.0]]
    assert (alerter["rounds_tied"], p99["rounds_tied"]) == (0, 0)
    tied = compare.summarise([{compare.THIS: {"a.lost": 0.0}, other: {"a.lost": 0.0}}], other)
    assert (tied[0]["rounds_won"], tied[0]["rounds_tied"]) == (0, 1)
    text = compare.table(compare.summarise(rounds, other), other)
    assert "2/3" in text
    assert "1/2 (less is better)" in text
    assert "0/1, 1 equal (less is better)" in compare.table(tied, other)


def test_each_child_runs_once_with_the_same_stages_and_sizes_in_its_own_data_folder(tmp_path):
    args = parse_args(
        ["--compare", "HEAD", "--stages", "alerter,ingest", "--events", "50000", "--seconds", "5", "--web-workers", "3"]
    )
    argv = compare.child_argv(args, tmp_path / "out.json", tmp_path / "data")
    assert argv[:3] == [sys.executable, "-m", "benchmarks"]
    assert argv[3:] == [
        "--stages", "alerter,ingest", "--runs", "1", "--output", str(tmp_path / "out.json"),
        "--data-dir", str(tmp_path / "data"), "--events", "50000", "--seconds", "5.0", "--web-workers", "3",
    ]  # fmt: skip
    smoke = compare.child_argv(parse_args(["--compare", "HEAD", "--smoke"]), tmp_path / "o", tmp_path / "d")
    assert "--smoke" in smoke
    assert "--durable" not in smoke
    assert parse_args(["--compare", "HEAD"]).rounds == 4, "the default: even, so ABBA is balanced"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "2"], "--rounds goes with --compare"),
        (["--compare", "HEAD", "--runs", "3"], "use --rounds, not --runs"),
        (["--compare", "HEAD", "--profile"], "use --rounds, not --runs"),
        (["--compare", "HEAD", "--rounds", "0"], "--rounds must be at least 1"),
        (["--web-workers", "0"], "--web-workers must be at least 1"),
    ],
)
def test_options_that_do_not_go_together_are_refused_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        parse_args(argv)
    assert refused.value.code == 2
    assert message in capsys.readouterr().err


def test_a_revision_is_exported_once_and_a_name_that_is_no_commit_is_refused(tmp_path):
    commit = compare.resolve("HEAD")
    assert len(commit) == 40
    tree = compare.export(commit, tmp_path)
    assert (tree / "benchmarks" / "__main__.py").read_bytes() == _committed("benchmarks/__main__.py", commit)
    (tree / "marker").write_text("kept")
    assert compare.export(commit, tmp_path) == tree
    assert (tree / "marker").exists(), "reused, not exported again"
    with pytest.raises(SystemExit, match="names no commit"):
        compare.resolve("no-such-revision-anywhere")


def _committed(path: str, commit: str) -> bytes:
    import subprocess

    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=BASE_DIR, capture_output=True, check=True).stdout
