"""Run the device, or command a running one.

``python -m warp.device --root DIR [options]`` (or ``warpzip device ...``) runs the simulated
accelerator. Two subcommands talk to a running device through its control socket
(``warp.device.control``)::

    python -m warp.device inject --root DIR hang [--seconds S]     engines stop fetching (until reset without S)
    python -m warp.device inject --root DIR hw-error [--count N]   the next N jobs fail HW_ERROR (0x42), each resets
    python -m warp.device inject --root DIR reset-fail [--count N] the next N controller resets fail (isolation)
    python -m warp.device inject --root DIR cqe-error --qp Q       AEQE QM_CQE_ERROR: queue pair Q is disabled
    python -m warp.device inject --root DIR eq-overflow            AEQE QM_EQ_OVERFLOW: the function is reset
    python -m warp.device inject --root DIR iopf-storm             reclaim every page of every bound mapping
    python -m warp.device inject --root DIR slow --factor F        engines take F x each job's time
    python -m warp.device inject --root DIR crash                  the device exits at once with status 70
    python -m warp.device reset --root DIR                         controller reset: every queue's stop flags set

An embedded device is started by the service with ``--parent-pipe``: it exits when that pipe
closes (the parent died or let go) and asks the kernel for SIGTERM on parent death as well, so no
device outlives its service.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import functools
import json
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from warp import cdev, logs, options
from warp.device import ENGINES, QUEUE_PAIRS, control
from warp.device.core import UacceCore
from warp.device.pool import PoolSizes, Timing
from warp.device.zip import ZipDevice
from warp.dfx import Dfx
from warp.iommu.mmu import Iommu
from warp.zstream import DEFAULT_MEMORY

PR_SET_PDEATHSIG = 1
SIGNAL_POLL = 0.1  # seconds between looks at the signal flag
log = logging.getLogger("warp.device")
SUBCOMMANDS = ("inject", "reset")
T = TypeVar("T")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="warpzip device", description="Run the simulated uacce zstd accelerator. Every flag can also be set "
        "with its WARPZIP_<FLAG> variable, as for warpzip serve (WARPZIP_ROOT, WARPZIP_ENGINES mean the same there).",
        epilog="Subcommands for a running device: 'inject --root DIR {hang,hw-error,reset-fail,cqe-error,"
               "eq-overflow,iopf-storm,slow,crash}' "
               "and 'reset --root DIR' (see 'warpzip device inject --help').")
    option = functools.partial(_option, parser)
    integer, number = options.integer, options.number
    option("--root", Path, cdev.default_root(), "runtime root")
    option("--engines", integer, ENGINES, "engines (threads) of each pool that has no size of its own")
    option("--comp-engines", integer, None, "engines of the compression pool; None: as --engines")
    option("--decomp-engines", integer, None, "engines of the decompression pool; None: as --engines")
    option("--bd-latency-us", number, 0.0, "timing model: every BD takes at least this long, the engine sleeping "
           "out what real zstd time leaves; 0 = off (real zstd time)")
    option("--engine-mb-s", number, 0.0, "timing model: engine rate in MB/s of uncompressed bytes, added to "
           "--bd-latency-us; 0 = off")
    option("--stream-memory", integer, DEFAULT_MEMORY, "bytes all stream contexts may hold together in the device "
           "(zstd's estimate of each: ~90 MiB for a level-19 compression stream); a new stream past it fails "
           "NO_CTX_MEMORY")
    option("--queue-pairs", integer, QUEUE_PAIRS, "hardware queue pairs of the device, shared by every process "
           "(warpzip serve's --queues is per worker and direction)")
    option("--batch", integer, 32, "SQEs an engine takes from a queue per turn")
    option("--irq-coalesce", integer, 4, "completions per interrupt (interrupt moderation by count)")
    option("--irq-delay-us", integer, 0, "moderation by time: raise the interrupt at most this long after the first "
           "unsignalled completion instead of at the end of each batch; 0 = off")
    option("--reclaim-interval-ms", number, 0.0, "memory-pressure simulator: reclaim pages every this many ms; 0 = off")
    option("--reclaim-fraction", number, 0.1, "fraction of each bound mapping's present pages a reclaim pass takes")
    option("--log-format", str, "text", "log lines as text, or one JSON object per line (as warpzip serve's)")
    option("--iommu-sva", integer, 1, "1: the IOMMU grants IOPF and SVA; 0: it cannot, so uacce clears UACCE_DEV_SVA "
           "from flags and QM registers no char device (the library then finds no device)")
    parser.add_argument("--parent-pipe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.log_format not in logs.FORMATS:
        parser.error(f"--log-format: choose from {', '.join(logs.FORMATS)}")
    args.comp_engines = args.engines if args.comp_engines is None else args.comp_engines
    args.decomp_engines = args.engines if args.decomp_engines is None else args.decomp_engines
    for name in ("engines", "comp_engines", "decomp_engines", "queue_pairs", "batch", "irq_coalesce", "stream_memory"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.queue_pairs > 0xFFF + 1:
        parser.error("--queue-pairs: a doorbell addresses at most 4096 queues (qn is 12 bits)")
    if args.irq_delay_us < 0 or args.reclaim_interval_ms < 0 or args.bd_latency_us < 0 or args.engine_mb_s < 0:
        parser.error("--irq-delay-us, --reclaim-interval-ms, --bd-latency-us and --engine-mb-s must not be negative")
    if not 0 < args.reclaim_fraction <= 1:
        parser.error("--reclaim-fraction must be within (0, 1]")
    return args


def _option(parser: argparse.ArgumentParser, flag: str, kind: Callable[[str], T], default: T, text: str) -> None:
    """A flag whose default is its WARPZIP_* variable, else ``default`` (warp.options)."""
    parser.add_argument(flag, type=kind, default=options.env_default(parser, flag, kind, default),
                        help=f"{text} ({options.variable(flag)}; default %(default)s)")


def prepare_root(root: Path) -> None:
    """Create the runtime root owner-only; refuse one that someone else owns, or that is not a
    directory of its own. The default root sits in /tmp under a predictable name, so another user
    can plant a symlink there first (to a directory of ours, which would pass the owner check):
    the root is looked at with ``lstat``, and a link is refused rather than followed."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        root.mkdir(mode=0o700, parents=True)
        st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise SystemExit(f"warpzip device: {root} is not a directory but a link or a file; refusing to use it")
    if st.st_uid != os.getuid():
        raise SystemExit(f"warpzip device: {root} belongs to uid {st.st_uid}, not us")
    os.chmod(root, 0o700)
    os.umask(os.umask(0) | 0o022)  # clients refuse a tree others can write (cdev.check_trusted)


def claim_root(root: Path) -> int:
    """Take the root for this device: an exclusive ``flock`` on ``<root>/device.lock``, released by
    the kernel when the process ends however it ends. A second device on a root in use would
    unlink the first one's live char device and leave its queues unreachable; it refuses instead,
    and the first keeps serving."""
    fd = os.open(root / cdev.ROOT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SystemExit(f"warpzip device: {root} is in use by a running device (pid {holder}); "
                         "give this one another --root") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run(args: argparse.Namespace) -> int:
    logs.configure(logging.INFO, args.log_format)
    stop = threading.Event()
    if args.parent_pipe is not None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        threading.Thread(target=_watch_parent, args=(args.parent_pipe, stop), daemon=True).start()
    # A signal handler runs in the main thread between bytecodes — possibly inside stop.wait(),
    # holding the Event's lock — so it must not call stop.set() (that deadlocked when two SIGTERMs
    # came at once). It only flips a flag that the main loop below polls.
    signalled: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    prepare_root(args.root)
    claim_root(args.root)  # its fd stays open, and locked, for the life of the process
    paths = cdev.DevicePaths(args.root, ZipDevice.name)
    paths.debugfs.mkdir(parents=True, exist_ok=True)
    pools = PoolSizes(args.comp_engines, args.decomp_engines)
    dfx = Dfx(paths.dfx, queues=args.queue_pairs, engines=pools.total, create=True)
    iommu = Iommu(dfx.faults)
    device = ZipDevice(iommu, dfx, pools=pools, batch=args.batch, irq_coalesce=args.irq_coalesce,
                       irq_delay_us=args.irq_delay_us, reclaim_interval_ms=args.reclaim_interval_ms,
                       reclaim_fraction=args.reclaim_fraction, timing=Timing(args.bd_latency_us, args.engine_mb_s),
                       stream_memory=args.stream_memory)
    core = UacceCore(paths, device, iommu, sva=bool(args.iommu_sva))
    core.publish()
    ctl = control.ControlServer(paths.control, device.control)
    ctl.serve()
    core.serve()
    log.info("%s ready at %s (%d compression + %d decompression engines, %d queue pairs%s)", device.name,
             paths.chardev, pools.comp, pools.decomp, args.queue_pairs,
             "" if args.iommu_sva else ", no SVA: not registered")
    print(f"READY {paths.chardev}", flush=True)
    while not signalled and not stop.wait(SIGNAL_POLL):
        pass
    ctl.close()
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


# ---- commanding a running device -------------------------------------------------------------
def parse_command(argv: list[str]) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="runtime root of the device")
    common.add_argument("--device", default=argparse.SUPPRESS, help="device name (default warp_zip-0)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the reply as JSON")
    parser = argparse.ArgumentParser(prog="warpzip device", description="Command a running device.")
    commands = parser.add_subparsers(dest="command", required=True)
    inject = commands.add_parser("inject", parents=[common], help="inject a fault",
                                 description="Inject a fault into a running device.")
    faults = inject.add_subparsers(dest="fault", required=True, metavar="FAULT")
    hang = faults.add_parser("hang", parents=[common], help="engines stop fetching SQEs")
    hang.add_argument("--seconds", type=float, default=None, help="for this long (default: until reset)")
    hw = faults.add_parser("hw-error", parents=[common], help="the next N jobs fail with a hardware error")
    hw.add_argument("--count", type=int, default=1, help="how many jobs, default 1")
    fail = faults.add_parser("reset-fail", parents=[common], help="the next N controller resets fail")
    fail.add_argument("--count", type=int, default=1, help="how many resets, default 1")
    cqe = faults.add_parser("cqe-error", parents=[common], help="an AEQ CQE-error event: the queue pair is disabled")
    cqe.add_argument("--qp", type=int, required=True, help="queue pair number (its DFX row)")
    faults.add_parser("eq-overflow", parents=[common], help="an AEQ EQ-overflow event: the function is reset")
    faults.add_parser("iopf-storm", parents=[common], help="reclaim every page of every bound mapping once")
    slow = faults.add_parser("slow", parents=[common], help="engines take FACTOR x each job's time")
    slow.add_argument("--factor", type=float, required=True, help="1 restores full speed")
    faults.add_parser("crash", parents=[common], help="the device process exits at once (status 70)")
    commands.add_parser("reset", parents=[common], help="controller reset: every queue stopped for good",
                        description="Controller reset: counts toward isolate_strategy, sets every queue's "
                                    "TX/RX stop flags (users re-create their queues), ends an injected hang or "
                                    "slow-down. It does not clear isolation.")
    args = parser.parse_args(argv)
    args.root = getattr(args, "root", cdev.default_root())
    args.device = getattr(args, "device", ZipDevice.name)
    args.json = getattr(args, "json", False)
    return args


def command(argv: list[str]) -> int:
    args = parse_command(argv)
    path = cdev.DevicePaths(args.root, args.device).control
    message: cdev.Message = {"cmd": args.command}
    if args.command == "inject":
        message["fault"] = args.fault
        if args.fault == "hang":
            message["seconds"] = args.seconds
        elif args.fault in ("hw-error", "reset-fail"):
            message["count"] = args.count
        elif args.fault == "cqe-error":
            message["qp"] = args.qp
        elif args.fault == "slow":
            message["factor"] = args.factor
    try:
        reply = control.request(path, message)
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write(f"warpzip device: no device is running under {args.root} (no control socket at {path})\n")
        return 1
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "EIO")
        sys.stderr.write(f"warpzip device: {args.device} refused {args.command}: {name}: {exc.strerror}\n")
        return 1
    if args.json:
        print(json.dumps(reply))
    elif args.command == "reset":
        print(f"{args.device}: reset (#{reply['resets']})" + (", still isolated" if reply.get("isolated") else ""))
    else:
        detail = ", ".join(f"{k} {v}" for k, v in reply.items())
        print(f"{args.device}: injected {args.fault}" + (f" ({detail})" if detail else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return command(args)
    return run(parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
