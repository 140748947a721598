"""``--root`` cannot be turned into a way to write elsewhere: the default root has a predictable
name in /tmp, so another user can plant a symlink (or a file) there before the device starts. The
device refuses such a root with a one-line error and writes nothing through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from warp.device.main import prepare_root


def start(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warp.device", "--root", str(root)], capture_output=True,
                          text=True, timeout=30, cwd=REPO)


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symlinked_root_is_refused_and_nothing_is_written_through_it(tmp_path: Path, target_exists: bool) -> None:
    target = tmp_path / "victim"
    if target_exists:
        target.mkdir(mode=0o755)  # ours, so an owner check alone would accept it
        (target / "keep").write_text("mine\n")
    root = tmp_path / "root"
    root.symlink_to(target)
    done = start(root)
    assert done.returncode != 0
    assert "not a directory but a link" in done.stderr and "Traceback" not in done.stderr, done.stderr
    if target_exists:
        assert sorted(p.name for p in target.iterdir()) == ["keep"]
        assert (target.stat().st_mode & 0o777) == 0o755  # not chmod-ed through the link
    else:
        assert not target.exists()


def test_a_file_as_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("not a directory\n")
    done = start(root)
    assert done.returncode != 0 and "not a directory" in done.stderr, done.stderr
    assert root.read_text() == "not a directory\n"


def test_a_fresh_root_is_created_owner_only(tmp_path: Path) -> None:
    """The positive case through the same function: the device makes its root 0700 (and starts)."""
    root = tmp_path / "a" / "b" / "root"
    prepare_root(root)
    assert root.is_dir() and (os.lstat(root).st_mode & 0o777) == 0o700
