"""``--root`` cannot be turned into a way to write elsewhere: the default root has a predictable
name in /tmp, so another user can plant a symlink (or a file) there before the device starts. The
device refuses such a root with a one-line error and writes nothing through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.harness import IN_CI, REPO, start_device
from warp import NoDevice, Runtime
from warp.cdev import DevicePaths
from warp.device.launch import stop_process
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


# --- the client side: a tree or a device of another user gets nothing (issue 15, item 1) -----------

INTRUDER = 54321
"""A uid with no account: the intruder process runs as it (the test needs root to switch to it)."""
SYSTEM_PYTHON = "/usr/bin/python3"
"""Debian's interpreter: the venv's lives under /root, which the intruder cannot enter."""

INTRUDER_CODE = r"""
import array, os, socket, sys
from pathlib import Path
mode, target, report = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "tree":  # plant a whole runtime root: sysfs attributes and a listening char device
    sysfs = target / "sys/class/uacce/warp_zip-0"
    sysfs.mkdir(parents=True)
    attrs = {"api": "hisi_qm_v2", "flags": "1", "available_instances": "64", "algorithms": "zstd",
             "region_mmio_size": "4096", "region_dus_size": "262144", "isolate": "0",
             "isolate_strategy": "0", "node_id": "0"}
    for name, value in attrs.items():
        (sysfs / name).write_text(value + "\n")
    (target / "dev").mkdir()
    target = target / "dev/warp_zip-0"
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(str(target))
listener.listen(8)
report.write_text("ready\n")
listener.settimeout(30)
while True:
    conn, _ = listener.accept()
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
    got = sum(len(d) // fds.itemsize for _, _, d in ancdata)
    with report.open("a") as out:
        out.write(f"connection {len(data)} bytes {got} fds\n")
    conn.close()
"""


def intruder(mode: str, target: Path, report: Path) -> subprocess.Popen[bytes]:
    """Another user's process: ``tree`` plants a runtime root at ``target``, ``socket`` only a
    listening char device; it writes down every connection and the fds that came with it."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI must run as root to test another user")
        pytest.skip("switching to another uid needs root (CI runs as root)")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        (pytest.fail if IN_CI else pytest.skip)(f"{SYSTEM_PYTHON} is missing (.ci/run installs python3)")
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", INTRUDER_CODE, mode, str(target), str(report)], user=INTRUDER,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (report.exists() and report.read_text().startswith("ready")):
        assert proc.poll() is None and time.monotonic() < deadline, "the intruder did not start"
        time.sleep(0.02)
    return proc


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory everyone may write to, as /tmp is (the default root's parent)."""
    path = Path(tempfile.mkdtemp(prefix="warpzip-shared-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_tree_planted_by_another_user_gets_no_heap(shared_tmp: Path) -> None:
    root, report = shared_tmp / "root", shared_tmp / "report"
    proc = intruder("tree", root, report)
    try:
        with pytest.raises(NoDevice, match="belongs to uid 54321"):
            Runtime(root, driver="zip", heap_size=1 << 20)
        info = subprocess.run([sys.executable, "-m", "app", "info", "--root", str(root)], capture_output=True,
                              text=True, timeout=30, cwd=REPO)
        assert info.returncode == 1 and "belongs to uid 54321" in info.stderr and "Traceback" not in info.stderr
        rt = Runtime(root, driver="auto", heap_size=1 << 20)  # the service's mode: the cpu, never the intruder
        try:
            assert rt.driver.name == "cpu"
            with rt.compressor().compress(b"secret " * 100) as result:
                assert zstandard.decompress(bytes(result.view)) == b"secret " * 100
        finally:
            rt.close()
    finally:
        stop_process(proc)
    assert report.read_text() == "ready\n", "the client talked to the intruder"


def test_a_char_device_served_by_another_user_gets_no_heap(tmp_path: Path, shared_tmp: Path) -> None:
    """Every file under the root is ours — the socket file too, as if swapped in after the tree was
    checked — but the process listening behind it is not: SO_PEERCRED refuses it before a byte."""
    device = start_device(tmp_path / "root")
    chardev = DevicePaths(device.root, "warp_zip-0").chardev
    stop_process(device.proc)  # the tree stays; its char device goes with it
    report = shared_tmp / "report"
    proc = intruder("socket", shared_tmp / "evil.sock", report)
    try:
        os.rename(shared_tmp / "evil.sock", chardev)
        os.chown(chardev, 0, 0)
        os.chmod(chardev, 0o600)
        with pytest.raises(NoDevice, match="runs as uid 54321"):
            Runtime(tmp_path / "root", driver="zip", heap_size=1 << 20)
        deadline = time.monotonic() + 5
        while "connection" not in report.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop_process(proc)
    assert report.read_text() == "ready\nconnection 0 bytes 0 fds\n", report.read_text()


def test_a_second_device_on_a_root_in_use_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    """Issue 15, item 4: a second device on the same root used to unlink the first one's live char
    device; now the first holds the root's lock and the second exits with one line."""
    first = start_device(tmp_path / "root")
    try:
        second = start(first.root)
        assert second.returncode != 0
        assert f"in use by a running device (pid {first.pid})" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        rt = Runtime(first.root, driver="zip", heap_size=1 << 20)
        try:
            with rt.compressor().compress(b"still mine " * 50) as result:
                assert zstandard.decompress(bytes(result.view)) == b"still mine " * 50
        finally:
            rt.close()
    finally:
        stop_process(first.proc)
    again = start_device(tmp_path / "root")  # the lock went with the process: the root is free
    stop_process(again.proc)
