"""``warpzip`` command line: serve | device | info | bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Final

from warp import cdev

COMMANDS: Final = {
    "serve": "serve POST /compress and /decompress over HTTP on the (embedded) accelerator",
    "device": "run the simulated uacce accelerator, or command a running one (inject, reset)",
    "info": "show the uacce devices, queues and engines under a runtime root",
    "bench": "benchmark the device engines (bench device) or the HTTP service against peers (bench http)",
}
BENCHES: Final = {
    "device": "the device engines against inline zstd, in uadk_tool's layout",
    "http": "the HTTP service against aiohttp peers with wrk (what `make bench` runs)",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = _dispatcher("warpzip", "zstd compression on a simulated uacce accelerator.", COMMANDS, version=True)
    if not args:
        parser.print_help(sys.stderr)
        return 2
    command = parser.parse_args(args[:1]).command  # -h, --version and unknown commands end here
    run: dict[str, Callable[[list[str]], int]] = {"serve": _serve, "device": _device, "info": _info,
                                                   "bench": _bench}
    return run[command](args[1:])


def _dispatcher(prog: str, description: str, commands: Mapping[str, str],
                version: bool = False) -> argparse.ArgumentParser:
    """A parser that only chooses the command (its own parser reads the rest): ``--help`` lists
    every command with its line and exits 0, an unknown one is an error with status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=f"'{prog} COMMAND --help' shows the options of a command.")
    if version:
        parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    choices = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in commands.items():
        choices.add_parser(name, help=text, add_help=False)
    return parser


def _version() -> str:
    try:
        return metadata.version("warpzip")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _serve(argv: list[str]) -> int:
    from app.config import parse_serve
    from app.server import serve

    return serve(parse_serve(argv))


def _device(argv: list[str]) -> int:
    from warp.device.main import main as device_main

    return device_main(argv)


def _bench(argv: list[str]) -> int:
    """``bench device ...``: warp.tool.bench (uadk_tool benchmark); ``bench http ...``: bench.driver."""
    parser = _dispatcher("warpzip bench", "Benchmarks; each answers one question (see README).", BENCHES)
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    if parser.parse_args(argv[:1]).command == "device":
        from warp.tool.bench import main as device_bench

        return device_bench(argv[1:])
    from bench.driver import main as http_bench

    return http_bench(argv[1:], prog="warpzip bench http")


def _info(argv: list[str]) -> int:
    from app.device_info import describe

    parser = argparse.ArgumentParser(prog="warpzip info", description="Show uacce devices under a runtime root.")
    parser.add_argument("--root", type=Path, default=cdev.default_root())
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        found = describe(args.root)
    except cdev.Untrusted as exc:
        print(f"warpzip info: {exc}", file=sys.stderr)
        return 1
    gone = [device["sysfs"]["name"] for device in found if not device["running"]]
    if args.json:
        print(json.dumps(found, indent=2))
        return 1 if gone or not found else 0
    if not found:
        print(f"no uacce devices under {args.root}")
        return 1
    for device in found:
        attrs = device["sysfs"]
        if not device["running"]:
            print(f"{attrs['name']}: gone — no device process holds {args.root} (its last counters follow)")
        print(f"{attrs['name']}: api {attrs['api']}, algorithms {','.join(attrs['algorithms'])}, "
              f"available_instances {attrs['available_instances']}, isolate {attrs['isolate']}")
        for q in device.get("queues", []):
            print(f"  queue {q['qid']:3d} {q['state']:8s} pasid {q['pasid']:3d} {q['qc_type']:10s} "
                  f"jobs {q['submitted']} ok {q['completed_ok']} err {q['completed_err']} iopf {q['iopf']}")
        for e in device.get("engines", []):
            print(f"  engine {e['engine']} ({e['pool']}) jobs {e['jobs']} busy {e['busy_ns'] / 1e9:.3f} s")
    return 1 if gone else 0


if __name__ == "__main__":
    sys.exit(main())
