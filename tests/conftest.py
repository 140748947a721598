"""Shared fixtures: real device processes, real servers on loopback ports, the Silesia corpus.

The code behind them is tests/harness, which tests import directly; fixtures stop what they start
by its PID at teardown, so the suite leaves nothing behind.
"""

from __future__ import annotations

import bz2
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DeviceProc, ServerProc, start_device, start_server
from warp.device.launch import stop_process
from warp.tool.corpus import CORPUS_DIR


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceProc]:
    """A standalone device process under a fresh runtime root."""
    dev = start_device(tmp_path / "root")
    yield dev
    stop_process(dev.proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """``warpzip serve`` with its embedded device, on a free loopback port (shared by a module)."""
    base = tmp_path_factory.mktemp("server")
    srv = start_server(base / "root", base / "server.log", "--access-log", "0")
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four Silesia files, decompressed at run time into a temp dir (never into the repo)."""
    out = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {}
    for packed in sorted(CORPUS_DIR.glob("*.bz2")):
        target = out / packed.stem
        with bz2.open(packed) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        files[packed.stem] = target
    assert len(files) == 4, f"expected 4 corpus files in {CORPUS_DIR}"
    return files
