"""The conventions tools can check, run by ``make test`` (and so by CI) as well as ``make lint``:
mypy strict and ruff over every Python file of the tree, as configured in pyproject.toml.

Not unit tests: each runs a whole tool over the repository in a subprocess (tens of seconds).
"""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_mypy_strict() -> None:
    completed = run("mypy")  # the files and flags are pyproject's [tool.mypy]
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_ruff() -> None:
    completed = run("ruff", "check")  # the whole project, with pyproject's [tool.ruff] rules
    assert completed.returncode == 0, completed.stdout + completed.stderr
