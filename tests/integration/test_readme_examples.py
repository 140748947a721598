"""The README's library example runs as written (issue 16), against a real device process: a
reader who copies it gets no error and leaks nothing."""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness import REPO, DeviceProc
from warp import Runtime
from warp.dfx import Queue, read_snapshot


def library_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return [block for block in blocks if "from warp import" in block]


def jobs_on_the_device(root: Path) -> int:
    [dfx] = root.glob("sys/kernel/debug/*/dfx")
    return sum(queue[Queue.COMPLETED_OK] for queue in read_snapshot(dfx).queues)


def test_the_readme_library_example_runs_on_the_device(device: DeviceProc) -> None:
    [example] = library_examples()
    before = jobs_on_the_device(device.root)
    scope: dict[str, object] = {"root": str(device.root)}  # a str: any PathLike is taken
    exec(compile(example, "README.md", "exec"), scope)  # the README is ours
    runtime = scope["rt"]
    assert isinstance(runtime, Runtime) and runtime.closed  # the with closed it
    assert runtime.statistics().heap.in_use_bytes == 0  # every result went back to the pool
    assert runtime.fallback_jobs == 0
    assert jobs_on_the_device(device.root) - before >= 6  # compress, decompress, one, a batch of two, async


def test_runtime_takes_any_path_and_is_a_context_manager(device: DeviceProc) -> None:
    for root in (str(device.root), Path(device.root)):
        with Runtime(root, driver="zip", heap_size=16 << 20) as rt:
            assert rt.root == Path(device.root)
            frame = rt.compress(b"abc" * 1000, level=5, checksum=True)
            assert rt.decompress(frame) == b"abc" * 1000
        assert rt.closed
