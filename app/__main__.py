"""``warpzip`` command line: serve | device | info | bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from warp import cdev


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = {"serve": _serve, "device": _device, "info": _info, "bench": _bench}
    if not args or args[0] not in commands:
        sys.stderr.write("usage: warpzip {serve|device|info|bench} [--help]\n")
        return 2
    return commands[args[0]](args[1:])


def _serve(argv: list[str]) -> int:
    from app.config import parse_serve
    from app.server import serve

    return serve(parse_serve(argv))


def _device(argv: list[str]) -> int:
    from warp.device.main import main as device_main

    return device_main(argv)


def _bench(argv: list[str]) -> int:
    """``bench device ...``: warp.tool.bench (uadk_tool benchmark); ``bench http ...``: bench.driver."""
    if argv and argv[0] == "device":
        from warp.tool.bench import main as device_bench

        return device_bench(argv[1:])
    if argv and argv[0] == "http":
        from bench.driver import main as http_bench

        return http_bench(argv[1:])
    sys.stderr.write("usage: warpzip bench {device|http} [--help]\n")
    return 2


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
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print(f"no uacce devices under {args.root}")
        return 1
    for device in found:
        attrs = device["sysfs"]
        print(f"{attrs['name']}: api {attrs['api']}, algorithms {','.join(attrs['algorithms'])}, "
              f"available_instances {attrs['available_instances']}, isolate {attrs['isolate']}")
        for q in device.get("queues", []):
            print(f"  queue {q['qid']:3d} {q['state']:8s} pasid {q['pasid']:3d} {q['qc_type']:10s} "
                  f"jobs {q['submitted']} ok {q['completed_ok']} err {q['completed_err']} iopf {q['iopf']}")
        for e in device.get("engines", []):
            print(f"  engine {e['engine']} jobs {e['jobs']} busy {e['busy_ns'] / 1e9:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
