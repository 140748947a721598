"""Configuration: flags beat WARPZIP_* variables beat defaults; a bad value is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Config, parse_serve, serve_parser

REPO = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    config = parse_serve([])
    assert (config.host, config.port, config.device) == ("127.0.0.1", 8080, "embedded")
    assert config.workers == max(1, len(os.sched_getaffinity(0)) // 2) and not config.access_log
    assert config.max_body == 64 << 20 and config.max_pending == Config().max_pending


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARPZIP_PORT", "9001")
    monkeypatch.setenv("WARPZIP_MAX_BODY", "1048576")
    monkeypatch.setenv("WARPZIP_ACCESS_LOG", "off")
    config = parse_serve(["--port", "9002"])
    assert config.port == 9002  # the flag wins
    assert config.max_body == 1 << 20 and config.access_log is False


def test_every_option_names_its_variable() -> None:
    text = serve_parser().format_help()
    for action in serve_parser()._actions:
        if action.dest != "help" and action.help != "==SUPPRESS==":
            assert f"WARPZIP_{action.dest.upper()}" in text, action.dest


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--port", "70000"], {}, "--port"),
    (["--workers", "0"], {}, "--workers"),
    ([], {"WARPZIP_PORT": "eighty"}, "WARPZIP_PORT: not an integer: 'eighty'"),
    (["--port", "eighty"], {}, "argument --port: not an integer: 'eighty'"),
    (["--max-body", "64X"], {}, "argument --max-body: not a size: '64X'"),
    ([], {"WARPZIP_HEAP_SIZE": "lots"}, "WARPZIP_HEAP_SIZE: not a size"),
    (["--job-timeout", "soon"], {}, "argument --job-timeout: not a number of seconds"),
    (["--log-level", "chatty"], {}, "--log-level"),
    (["--device", "gpu"], {}, "--device"),
    (["--shutdown-timeout", "-1"], {}, "--shutdown-timeout"),
    (["--max-body", str(1 << 30), "--heap-size", str(1 << 20)], {}, "--heap-size"),
    ([], {"WARPZIP_ACCESS_LOG": "maybe"}, "WARPZIP_ACCESS_LOG: not a boolean"),
    ([], {"WARPZIP_DEVICE": "gpu"}, "WARPZIP_DEVICE: invalid choice 'gpu'"),
    (["--sched", "fastest"], {}, "--sched"),
])
def test_bad_values_are_one_line_and_status_2(args: list[str], env: dict[str, str], needle: str) -> None:
    completed = subprocess.run([sys.executable, "-m", "app", "serve", *args], cwd=REPO, capture_output=True,
                               text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr
    assert "invalid _" not in completed.stderr  # no internal function names


@pytest.mark.parametrize(("text", "size"), [
    ("1048576", 1 << 20), ("64k", 64 << 10), ("64K", 64 << 10), ("64KiB", 64 << 10), ("64kb", 64 << 10),
    ("1M", 1 << 20), ("1MiB", 1 << 20), ("2g", 2 << 30), ("1GiB", 1 << 30),
])
def test_sizes_take_binary_suffixes_in_flags_and_variables(text: str, size: int) -> None:
    assert parse_serve(["--max-body", text, "--heap-size", "8GiB"]).max_body == size
    assert parse_serve([], {"WARPZIP_MAX_BODY": text, "WARPZIP_HEAP_SIZE": "8G"}).max_body == size


@pytest.mark.parametrize("level", ["info", "Info", "INFO", "debug", "warning", "error"])
def test_log_level_in_any_case(level: str) -> None:
    assert parse_serve(["--log-level", level]).log_level == level.upper()
    assert parse_serve([], {"WARPZIP_LOG_LEVEL": level}).log_level == level.upper()


def test_access_log_is_a_flag_pair() -> None:
    assert parse_serve(["--access-log"]).access_log is True
    assert parse_serve(["--no-access-log"], {"WARPZIP_ACCESS_LOG": "1"}).access_log is False
    assert parse_serve(["--access-log", "0"]).access_log is False  # the value form still works
    assert parse_serve([], {"WARPZIP_ACCESS_LOG": "yes"}).access_log is True
