"""Packaging as its users expect (issue 16): `make run` installs what serving needs and no dev tools,
the test targets add them; the library ships its annotations (PEP 561); the license is an SPDX
expression (PEP 639)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).parents[2]


def planned(target: str, tmp_path: Path) -> str:
    """The commands ``make <target>`` would run on a fresh machine (a venv that does not exist)."""
    return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=30, check=True).stdout


def test_make_run_installs_the_service_without_dev_extras(tmp_path: Path) -> None:
    commands = planned("run", tmp_path)
    assert "pip install --quiet -e ." in commands and "[dev]" not in commands
    assert "-m app serve" in commands


def test_make_test_installs_the_dev_extras(tmp_path: Path) -> None:
    commands = planned("test", tmp_path)
    assert "pip install --quiet -e '.[dev]'" in commands and "-m pytest -q" in commands


def test_the_library_ships_py_typed_and_an_spdx_license() -> None:
    assert (REPO / "warp" / "py.typed").is_file()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["warp"]
