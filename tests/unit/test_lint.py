"""The conventions that tools can check: mypy strict on ``warp`` and ``deploy/build.py``, ruff on the
whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_mypy_strict() -> None:
    completed = run("mypy")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_ruff() -> None:
    completed = run("ruff", "check", "app", "warp", "bench", "tests", "grafana", "deploy")
    assert completed.returncode == 0, completed.stdout + completed.stderr
