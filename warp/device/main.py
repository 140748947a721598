"""Run the device: ``python -m warp.device --root DIR`` (or ``warpzip device``).

An embedded device is started by the service with ``--parent-pipe``: it exits when that pipe
closes (the parent died or let go) and asks the kernel for SIGTERM on parent death as well, so no
device outlives its service.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from warp import cdev
from warp.device.core import UacceCore
from warp.device.zip import ZipDevice
from warp.dfx import Dfx
from warp.iommu.mmu import Iommu

PR_SET_PDEATHSIG = 1
log = logging.getLogger("warp.device")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warpzip device", description="Run the simulated uacce zstd accelerator.")
    parser.add_argument("--root", type=Path, default=cdev.default_root(), help="runtime root (default %(default)s)")
    parser.add_argument("--engines", type=int, default=1, help="compression engines (threads), default 1")
    parser.add_argument("--queues", type=int, default=64, help="hardware queue pairs, default 64")
    parser.add_argument("--batch", type=int, default=32, help="SQEs an engine takes from a queue per turn")
    parser.add_argument("--irq-coalesce", type=int, default=4,
                        help="completions per interrupt within a batch (interrupt moderation), default 4")
    parser.add_argument("--parent-pipe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("engines", "queues", "batch", "irq_coalesce"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def prepare_root(root: Path) -> None:
    """Create the runtime root owner-only; refuse a root that someone else owns."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid():
        raise SystemExit(f"warpzip device: {root} belongs to uid {st.st_uid}, not us")
    os.chmod(root, 0o700)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s device %(levelname)s %(message)s")
    stop = threading.Event()
    if args.parent_pipe is not None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        threading.Thread(target=_watch_parent, args=(args.parent_pipe, stop), daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    prepare_root(args.root)
    paths = cdev.DevicePaths(args.root, ZipDevice.name)
    paths.debugfs.mkdir(parents=True, exist_ok=True)
    dfx = Dfx(paths.dfx, queues=args.queues, engines=args.engines, create=True)
    iommu = Iommu(dfx.faults)
    device = ZipDevice(iommu, dfx, engines=args.engines, batch=args.batch, irq_coalesce=args.irq_coalesce)
    core = UacceCore(paths, device, iommu)
    core.publish()
    core.serve()
    log.info("%s ready at %s (%d engines, %d queues)", device.name, paths.chardev, args.engines, args.queues)
    print(f"READY {paths.chardev}", flush=True)
    stop.wait()
    core.close()
    device.close()
    iommu.faults.close()
    paths.chardev.unlink(missing_ok=True)
    log.info("%s stopped", device.name)
    return 0


def _watch_parent(fd: int, stop: threading.Event) -> None:
    """Block on the parent's pipe: EOF means the parent is gone or wants us to stop."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
