"""The import layers of docs/adr/ADR-010-layers.md hold, so `make test` enforces them as CI's lint does.

``lint-imports`` (import-linter) checks the contracts in pyproject.toml; it reads the source, imports
nothing, and takes about half a second.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"lint-imports failed:\n{result.stdout}\n{result.stderr}", pytrace=False)


def test_every_top_level_package_is_checked():
    """A new package (an app, a tool) is in no contract until root_packages names it and a layer holds it."""
    config = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["tool"]["importlinter"]
    packages = {path.parent.name for path in BASE_DIR.glob("*/__init__.py")}
    assert packages <= set(config["root_packages"]), "add the package to root_packages and to a layer"
    (layers,) = (c["layers"] for c in config["contracts"] if c["type"] == "layers")
    layered = {name.strip("() ") for layer in layers for name in layer.replace("|", ":").split(":")}
    assert set(config["root_packages"]) <= layered, "every root package belongs to a layer"
