"""The `warpzip` command line as users of uvicorn, gunicorn and git expect it (issue 16): `--help`
lists every command and exits 0, `--version` prints the version, no command or an unknown one is
a usage error (status 2), and each command has its own `--help`."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from app.__main__ import BENCHES, COMMANDS

REPO = Path(__file__).resolve().parents[2]


def warpzip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command_and_exits_0(flag: str) -> None:
    done = warpzip(flag)
    assert done.returncode == 0, done.stderr
    for name, line in COMMANDS.items():
        assert name in done.stdout and line.split()[0] in done.stdout


def test_no_command_is_a_usage_error_that_still_lists_the_commands() -> None:
    done = warpzip()
    assert done.returncode == 2
    assert all(name in done.stderr for name in COMMANDS)


def test_an_unknown_command_is_one_error_line_and_status_2() -> None:
    done = warpzip("compress")
    assert done.returncode == 2
    assert "invalid choice: 'compress'" in done.stderr and "Traceback" not in done.stderr


def test_version() -> None:
    done = warpzip("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"warpzip {metadata.version('warpzip')}"


@pytest.mark.parametrize("command", [["serve"], ["device"], ["info"], ["bench"], ["bench", "device"],
                                     ["bench", "http"]])
def test_every_command_has_its_own_help(command: list[str]) -> None:
    done = warpzip(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and " ".join(command) in done.stdout.splitlines()[0]
    if command == ["bench"]:
        assert all(name in done.stdout for name in BENCHES)


def test_device_options_read_their_variables_like_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: `warpzip device` honours WARPZIP_* as serve does, `--engines` defaults alike, and
    the device's queue count has its own name (serve's --queues is per worker and direction)."""
    from app.config import parse_serve
    from warp.device.main import parse_args

    assert parse_args([]).engines == parse_serve([]).engines == 2
    monkeypatch.setenv("WARPZIP_ENGINES", "3")
    monkeypatch.setenv("WARPZIP_QUEUE_PAIRS", "16")
    args = parse_args([])
    assert (args.engines, args.queue_pairs) == (3, 16)
    assert parse_args(["--engines", "1"]).engines == 1  # the flag wins
    done = subprocess.run([sys.executable, "-m", "app", "device", "--root", "/nonexistent/x"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                                           "WARPZIP_ENGINES": "many"})
    assert done.returncode == 2 and "WARPZIP_ENGINES: not an integer: 'many'" in done.stderr
    assert "--queues" not in warpzip("device", "--help").stdout.replace("serve's --queues", "")
