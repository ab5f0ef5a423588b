"""Every function the profiler measures by name exists in the file it names, so a rename breaks this test
rather than silently turning a step of the profile into 0%."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from benchmarks import profiling

ROOT = Path(__file__).resolve().parents[2]
STEPS = [
    (name, label, file, function)
    for name, steps in vars(profiling).items()
    if name.endswith("_STEPS")
    for label, file, function in steps
]


def source_of(file: str) -> Path:
    """The file in this repository, else in an installed package (``prometheus_client/metrics.py``)."""
    for base in (ROOT, *(Path(entry) for entry in sys.path if entry)):
        if (base / file).is_file():
            return base / file
    raise AssertionError(f"{file} is in neither the repository nor an installed package")


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_the_alerter_ingest_and_forwarder_steps_are_all_checked():
    assert {name for name, *_ in STEPS} >= {"ALERTER_STEPS", "INGEST_STEPS", "FORWARDER_STEPS"}


@pytest.mark.parametrize(("steps", "label", "file", "function"), STEPS, ids=[f"{s[2]}:{s[3]}" for s in STEPS])
def test_each_measured_function_is_defined_in_its_file(steps, label, file, function):
    assert function in functions_in(source_of(file)), f"{steps} {label!r}: no function {function} in {file}"


def test_the_repository_paths_that_name_an_area_exist():
    top_level = {path.name for path in ROOT.iterdir() if path.is_dir()}
    paths = [needle for _, needles in profiling.AREAS for needle in needles if needle.split("/")[0] in top_level]
    assert paths, "the areas name files of this repository"
    assert [path for path in paths if not (ROOT / path).exists()] == []
