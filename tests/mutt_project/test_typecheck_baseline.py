"""The type check's baseline only shrinks, and strict modules have none (scripts/mypy_check.py).

mypy itself runs in CI's "type check" section (about 20 s cold); these tests hold the comparison rules
and the strictness read from the real pyproject.toml.
"""

from __future__ import annotations

from scripts.mypy_check import ROOT, compare, is_strict, read_baseline, strictness

ERROR = "configcenter/admin.py [assignment] Incompatible types in assignment"
OTHER = "delivery/dlq.py [index] Value is not indexable"


def test_the_same_errors_pass():
    assert compare([ERROR, OTHER], [OTHER, ERROR], {}) == []


def test_a_new_error_fails():
    assert compare([ERROR, OTHER], [OTHER], {}) == [f"new: {ERROR}"]


def test_a_second_occurrence_of_a_known_error_is_new():
    assert compare([ERROR, ERROR], [ERROR], {}) == [f"new: {ERROR}"]


def test_a_fixed_error_still_in_the_baseline_fails():
    assert compare([OTHER], [OTHER, ERROR], {}) == [f"fixed: {ERROR}"]


def test_a_baseline_entry_in_a_strict_module_fails():
    assert compare([ERROR], [ERROR], {"configcenter.*": True}) == [f"strict module in baseline: {ERROR}"]


def test_strictness_follows_mypy_precedence():
    patterns = {"ingest.*": True, "ingest.middleware": False, "rules.engine": True}
    assert is_strict("ingest/views.py", patterns)
    assert is_strict("ingest/__init__.py", patterns)
    assert not is_strict("ingest/middleware.py", patterns)
    assert is_strict("rules/engine.py", patterns)
    assert not is_strict("rules/engine_extra.py", patterns)
    assert not is_strict("ingestion/views.py", patterns)


def test_the_hot_path_is_strict_and_has_no_baseline():
    patterns = strictness()
    alerter = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "rules" / "alerter").glob("*.py"))
    assert "rules/alerter/step.py" in alerter
    for path in ("ingest/pipeline.py", *alerter, "rules/listener.py", "rules/engine.py", "delivery/forwarder.py"):
        assert is_strict(path, patterns), path
    assert [line for line in read_baseline() if is_strict(line.split(" ", 1)[0], patterns)] == []
