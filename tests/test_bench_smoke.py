"""Tests of the benchmark harness: its pure parts exactly, its I/O parts by one short real run.

The smoke run measures nothing (no timed assertions): it proves that the peers and the echo floor
answer correctly under wrk, that the report carries their numbers with warpzip's device CPU split
off, and that no server process outlives the driver.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from bench import bodies, plots, proctree, wrk
from bench import server as server_module
from bench import streams as bench_streams
from bench.driver import DEFAULT_LOADS, build_parser, choose_loads, parse_connections, parse_loads, parse_servers
from bench.report import Meta, Role, Row, ratios_to_best_peer, ratios_to_echo_floor, render_markdown, to_json
from bench.server import REPO_ROOT, SERVERS, RunningServer, ServerSpec, check_answer, check_echo
from tests.harness import wait_until
from warp.tool.corpus import CORPUS_DIR

WRK_STDOUT = """\
Running 2s test @ http://127.0.0.1:8080/compress?level=3
  1 threads and 4 connections
  Latency Distribution
     50%  257.00us
Requests/sec:  16190.99
JSON {"requests":1000,"duration_us":2000000,"non2xx":10,"errors":2,\
"p50_us":257,"p90_us":294,"p99_us":373,"bytes":4096}
"""

META = Meta(
    command="python -m bench",
    date="2025-01-01T00:00:00+00:00",
    uname="Linux test",
    cpu_model="Test CPU",
    cores=2,
    wrk_version="wrk 4.1.0",
    level=3,
    duration_s=10,
    warmup_s=1,
    corpus="test slices",
)


def require(tool_available: bool, what: str) -> None:
    """A missing tool skips locally but fails in CI, where a skip would hide an untested harness."""
    if not tool_available:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI")
        pytest.skip(f"{what} is not available")


def result(requests: int, non2xx: int = 0, p99_us: int = 4000) -> wrk.WrkResult:
    return wrk.WrkResult(requests, 1_000_000, non2xx, 0, 1000, 2000, p99_us, 0)


def row(server: str, requests: int | None, role: Role = Role.PEER, connections: int = 32,
        cpu_seconds: float = 1.5, device_cpu_seconds: float | None = None) -> Row:
    measured = None if requests is None else result(requests)
    failure = "exited with code 1" if requests is None else None
    return Row(server, role, "4 KiB", connections, 4096, measured, cpu_seconds=cpu_seconds,
               device_cpu_seconds=device_cpu_seconds, peak_rss_bytes=64 * 1024 * 1024, failure=failure)


def test_parse_output_reads_the_json_line() -> None:
    parsed = wrk.parse_output(WRK_STDOUT)
    assert parsed == wrk.WrkResult(1000, 2_000_000, 10, 2, 257, 294, 373, 4096)
    assert parsed.ok_per_second == pytest.approx(495.0)  # error statuses are not throughput


def test_parse_output_without_json_line_fails() -> None:
    with pytest.raises(ValueError, match="no JSON line"):
        wrk.parse_output("Requests/sec: 100\n")
    with pytest.raises(ValueError, match="lacks"):
        wrk.parse_output('JSON {"requests": 1}\n')


def test_body_env_uses_one_variable_per_mode(tmp_path: Path) -> None:
    one, two = tmp_path / "a", tmp_path / "b"
    assert wrk.body_env([one])["WRK_BODY"] == str(one)
    assert "WRK_BODIES" not in wrk.body_env([one])
    assert wrk.body_env([one, two])["WRK_BODIES"] == f"{one}:{two}"


def test_requests_env_routes_each_body(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRK_BODY", "/stale")
    env = wrk.requests_env([("/compress?level=3", tmp_path / "a"), ("/decompress", tmp_path / "b")])
    assert env["WRK_REQUESTS"] == f"/compress?level=3 {tmp_path / 'a'}\n/decompress {tmp_path / 'b'}"
    assert "WRK_BODY" not in env and "WRK_BODIES" not in env


def test_ratio_is_against_the_best_peer_under_the_same_load() -> None:
    rows = [
        row("warpzip", 3000, Role.WARPZIP),
        row("inline", 1000),
        row("inline-2proc", 2000),
        row("executor", None),
        row("echo", 9000, Role.FLOOR),  # faster than any peer, but it does not compress: not the bar
        row("inline", 500, connections=1),
        row("warpzip", 1000, Role.WARPZIP, connections=1),
    ]
    assert ratios_to_best_peer(rows) == [1.5, 0.5, 1.0, None, 4.5, 1.0, 2.0]


def test_ratio_is_absent_without_peers() -> None:
    assert ratios_to_best_peer([row("warpzip", 3000, Role.WARPZIP), row("echo", 9000, Role.FLOOR)]) == [None, None]


def test_host_cpu_leaves_the_device_out() -> None:
    warpzip = row("warpzip", 1000, Role.WARPZIP, cpu_seconds=0.5, device_cpu_seconds=0.2)
    assert warpzip.cpu_us_per_request == pytest.approx(500.0)
    assert warpzip.host_cpu_us_per_request == pytest.approx(300.0)
    assert warpzip.device_cpu_us_per_job == pytest.approx(200.0)
    peer = row("inline", 1000, cpu_seconds=0.4)
    assert peer.host_cpu_us_per_request == peer.cpu_us_per_request == pytest.approx(400.0)
    assert peer.device_cpu_us_per_job is None
    assert row("warpzip", None, Role.WARPZIP, device_cpu_seconds=0.2).host_cpu_us_per_request is None


def test_echo_floor_ratio_is_host_cpu_over_the_cheapest_floor_under_the_same_load() -> None:
    rows = [
        row("warpzip", 1000, Role.WARPZIP, cpu_seconds=0.5, device_cpu_seconds=0.2),  # host 300 µs/req
        row("inline", 1000, cpu_seconds=0.4),
        row("echo", 1000, Role.FLOOR, cpu_seconds=0.1),
        row("echo-2proc", 1000, Role.FLOOR, cpu_seconds=0.12),
        row("warpzip", 1000, Role.WARPZIP, connections=256, cpu_seconds=0.5, device_cpu_seconds=0.2),
    ]
    assert ratios_to_echo_floor(rows) == pytest.approx([3.0, 4.0, 1.0, 1.2, None])


def test_render_markdown_has_header_table_and_failures() -> None:
    rows = [
        row("warpzip", None, Role.WARPZIP),
        row("inline", 14300),
        row("warpzip-2w", 10000, Role.WARPZIP, cpu_seconds=2.0, device_cpu_seconds=1.0),
        row("echo", 20000, Role.FLOOR, cpu_seconds=1.0),
    ]
    markdown = render_markdown(META, rows)
    assert "- command: `python -m bench`" in markdown
    assert "- CPU: Test CPU, 2 cores" in markdown
    assert "## 4 KiB · 32 connections" in markdown
    assert "| server | req/s | MB/s in | p50 ms | p99 ms | CPU s | CPU µs/req | host µs/req outside device | " \
           "device µs/job | peak RSS MiB | non-2xx / err | × best peer | × echo floor |" in markdown
    # 1.5 s / 14,300 = 105 µs, all of it host CPU; the echo floor's is 1.0 s / 20,000 = 50 µs
    assert "| inline | 14,300 | 58.6 | 1.00 | 4.00 | 1.5 | 105 | 105 | — | 64.0 | 0 / 0 | 1.00× | 2.10× |" in markdown
    assert "| warpzip-2w | 10,000 | 41.0 | 1.00 | 4.00 | 2.0 | 200 | 100 | 100 | 64.0 | 0 / 0 | 0.70× | 2.00× |" \
           in markdown
    assert "| echo | 20,000 | 81.9 | 1.00 | 4.00 | 1.0 | 50 | 50 | — | 64.0 | 0 / 0 | 1.40× | 1.00× |" in markdown
    assert "| warpzip | **FAILED** |" in markdown
    assert "- warpzip FAILED: exited with code 1" in markdown


def test_json_carries_derived_numbers() -> None:
    document = to_json(META, [row("inline", 100), row("warpzip", 100, Role.WARPZIP, device_cpu_seconds=0.5),
                              row("echo", 100, Role.FLOOR, cpu_seconds=0.5)])
    assert document["meta"]["cores"] == 2
    inline, warpzip, echo = document["results"]
    assert inline["role"] == "peer" and echo["role"] == "floor"
    assert inline["req_per_s"] == pytest.approx(100.0)
    assert inline["ratio_to_best_peer"] == 1.0
    assert inline["cpu_us_per_request"] == pytest.approx(15_000.0)  # 1.5 CPU s over 100 responses
    assert inline["host_cpu_us_per_request"] == pytest.approx(15_000.0)
    assert inline["device_cpu_us_per_job"] is None
    assert inline["ratio_to_echo_floor"] == pytest.approx(3.0)
    assert warpzip["host_cpu_us_per_request"] == pytest.approx(10_000.0)
    assert warpzip["device_cpu_us_per_job"] == pytest.approx(5_000.0)
    assert warpzip["ratio_to_echo_floor"] == pytest.approx(2.0)
    assert inline["wrk"]["p99_us"] == 4000
    json.dumps(document)  # the role enum serialises as its name


def test_cli_lists_are_parsed() -> None:
    labels = [profile.label for profile in bodies.parse_profiles(["256,4KiB", "mixed", "4k"])]
    assert labels == ["256 B", "4 KiB", "mixed"]
    assert parse_connections(["1,4", "16"]) == [1, 4, 16]
    assert [spec.name for spec in parse_servers(["inline,executor"])] == ["inline", "executor"]
    assert [(p.label, c) for p, c in parse_loads(["4k,1m@32", "4k@1,32"])] == [
        ("4 KiB", 32), ("1 MiB", 32), ("4 KiB", 1)]
    for bad in (lambda: bodies.parse_profiles(["3k"]), lambda: parse_connections(["0"]),
                lambda: parse_loads(["4k"]), lambda: parse_loads(["4k@0"])):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        parse_servers(["nginx"])


def test_default_run_is_every_size_at_32_and_small_ones_overloaded() -> None:
    parser = build_parser()
    args = parser.parse_args([])
    assert [spec.name for spec in parse_servers(args.servers)] == ["warpzip", "inline", "inline-2proc", "executor",
                                                                    "echo"]
    cells = [(profile.label, count) for profile, count in choose_loads(args)]
    assert cells == [("4 KiB", 32), ("64 KiB", 32), ("1 MiB", 32), ("4 KiB", 256), ("64 KiB", 256)]
    assert choose_loads(args) == parse_loads(DEFAULT_LOADS)
    custom = [(p.label, c) for p, c in choose_loads(parser.parse_args("--sizes 256 --connections 1,4".split()))]
    assert custom == [("256 B", 1), ("256 B", 4)]  # no overload rows that were not asked for
    only_sizes = choose_loads(parser.parse_args(["--sizes", "1m"]))
    assert [(p.label, c) for p, c in only_sizes] == [("1 MiB", 32)]
    with pytest.raises(ValueError):
        choose_loads(parser.parse_args("--loads 4k@1 --sizes 1m".split()))


def test_only_warpzip_runs_a_device_and_only_peers_set_the_bar() -> None:
    assert {name: spec.role for name, spec in SERVERS.items() if spec.role is not Role.PEER} == {
        "warpzip": Role.WARPZIP, "warpzip-2w": Role.WARPZIP, "warpzip-1e": Role.WARPZIP,
        "echo": Role.FLOOR, "echo-2proc": Role.FLOOR}
    assert proctree.runs_device(["/usr/bin/python3", "-m", "warp.device", "--root", "/tmp/r", "--parent-pipe", "5"])
    assert proctree.runs_device(["python", "-X", "dev", "-m", "warp.device"])
    assert not proctree.runs_device(["python", "-m", "app", "serve", "--root", "/tmp/warp.device"])
    assert not proctree.runs_device(["python", "-m", "warp.devices"])


def test_mixed_profile_is_described_and_averaged() -> None:
    mixed = bodies.PROFILES["mixed"]
    assert len(mixed.slices) == 13
    assert mixed.mean_size == pytest.approx((4 * (256 + 4096 + 65536) + 1024 * 1024) / 13)
    assert bodies.describe(mixed).endswith("dickens/mr/x-ray/xml at 64 KiB, dickens at 1 MiB (round-robin)")
    assert bodies.describe(bodies.PROFILES["4k"]) == "dickens at 4 KiB"


def test_process_tree_from_parent_map() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1}
    assert proctree.descendants_and_self(parents, 10) == {10, 11, 12, 13}
    assert proctree.descendants_and_self(parents, 99) == set()


def test_parse_stat_survives_odd_command_names() -> None:
    fields = ["S", "41"] + ["0"] * 9 + ["70", "30"] + ["0"] * 6 + ["12345", "0", "256"]
    stat = proctree.parse_stat("42 (a (b) c) " + " ".join(fields) + " 0 0\n")
    assert (stat.pid, stat.ppid, stat.state, stat.cpu_ticks, stat.start_ticks) == (42, 41, "S", 100, 12345)
    assert stat.rss_bytes == 256 * proctree.PAGE_SIZE


def test_check_answer_accepts_only_one_frame_of_the_body() -> None:
    body = b"hello " * 100
    frame = zstandard.ZstdCompressor().compress(body)
    assert check_answer(200, frame, body) is None
    assert check_answer(200, frame + frame, body) is not None
    assert check_answer(200, frame, body + b"!") is not None
    assert check_answer(200, b"not zstd", body) is not None
    assert check_answer(503, b"", body) == "HTTP 503: b''"


def test_check_echo_accepts_only_the_first_third_of_the_body() -> None:
    body = bytes(range(256)) * 4
    assert check_echo(200, body[: len(body) // 3], body) is None
    assert check_echo(200, b"", b"ab") is None  # a third of two bytes is none
    assert check_echo(200, body[:100], body) is not None
    assert check_echo(200, body[1 : len(body) // 3 + 1], body) is not None
    assert check_echo(200, zstandard.ZstdCompressor().compress(body), body) is not None
    assert check_echo(500, b"oops", body) == "HTTP 500: b'oops'"
    assert SERVERS["echo"].check is check_echo and SERVERS["inline"].check is check_answer


@pytest.fixture
def inline_2proc(tmp_path: Path) -> Iterator[RunningServer]:
    with RunningServer(SERVERS["inline-2proc"], tmp_path) as server:
        server.wait_ready()
        yield server


def test_stop_leaves_no_forked_worker(inline_2proc: RunningServer) -> None:
    tree = {stat.key for stat in proctree.snapshot_tree(inline_2proc.process.pid)}
    assert len(tree) == 3  # the supervisor and its two SO_REUSEPORT workers
    inline_2proc.stop()
    assert inline_2proc.process.returncode == 0  # SIGTERM is a clean exit
    assert proctree.kill_tree(tree) == []  # nothing was left to kill


def test_stop_kills_a_tree_that_ignores_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "STOP_TIMEOUT_S", 0.2)
    stubborn = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.fork(); time.sleep(60)"
    spec = ServerSpec("stubborn", lambda _port, _scratch: [sys.executable, "-c", stubborn], Role.PEER)
    server = RunningServer(spec, tmp_path)
    try:
        wait_until(lambda: len(proctree.snapshot_tree(server.process.pid)) == 2, 10, "the fork")
        tree = {stat.key for stat in proctree.snapshot_tree(server.process.pid)}
    finally:
        server.stop()
    assert server.process.returncode == -signal.SIGKILL
    assert proctree.kill_tree(tree) == []


@pytest.mark.e2e
def test_wrk_sends_bodies_round_robin(inline_2proc: RunningServer, tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk")
    paths = [tmp_path / "small", tmp_path / "large"]
    paths[0].write_bytes(b"s" * 100)  # answered with ~140 bytes
    paths[1].write_bytes(os.urandom(50_000))  # incompressible: answered with ~50,150 bytes
    measured = wrk.run(inline_2proc.url(3), 2, 1, paths)
    assert measured.requests > 0
    assert (measured.non2xx, measured.errors) == (0, 0)
    assert 20_000 < measured.bytes / measured.requests < 30_000  # half of each, not all of one


@pytest.mark.e2e
def test_wrk_sends_each_request_to_its_own_path(inline_2proc: RunningServer, tmp_path: Path) -> None:
    """``WRK_REQUESTS``: one body to /compress, the other to a path the server does not serve."""
    require(shutil.which("wrk") is not None, "wrk")
    body = tmp_path / "body"
    body.write_bytes(b"s" * 100)
    base = inline_2proc.url(3).split("/compress")[0]
    with subprocess.Popen(wrk.command(base, 2, 1), stdout=subprocess.PIPE, text=True,
                          env=wrk.requests_env([("/compress?level=3", body), ("/nowhere", body)])) as proc:
        out, _ = proc.communicate(timeout=60)
    measured = wrk.parse_output(out)
    assert measured.requests > 0 and measured.errors == 0
    assert abs(measured.non2xx - measured.requests / 2) <= 2  # the 404s: every other request


@pytest.mark.e2e
def test_driver_smoke_run(tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk")
    require(CORPUS_DIR.is_dir(), f"the corpus at {CORPUS_DIR}")
    out, report = tmp_path / "run.md", tmp_path / "run.json"
    argv = "--servers warpzip,inline,executor,echo --sizes 4k --duration 2 --warmup 0 --connections 4".split()
    argv += ["--out", str(out), "--json", str(report)]
    completed = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    results = {entry["server"]: entry for entry in json.loads(report.read_text())["results"]}
    assert list(results) == ["warpzip", "inline", "executor", "echo"]
    for entry in results.values():
        assert entry["failure"] is None
        assert entry["req_per_s"] > 0
        assert (entry["wrk"]["non2xx"], entry["wrk"]["errors"]) == (0, 0)
        assert entry["cpu_seconds"] > 0
        assert 0 < entry["host_cpu_us_per_request"] <= entry["cpu_us_per_request"]
        assert entry["ratio_to_echo_floor"] == pytest.approx(
            entry["host_cpu_us_per_request"] / results["echo"]["cpu_us_per_request"])
    warpzip = results["warpzip"]
    assert 0 < warpzip["device_cpu_seconds"] < warpzip["cpu_seconds"]  # the device does work, the workers too
    assert warpzip["host_cpu_us_per_request"] + warpzip["device_cpu_us_per_job"] == pytest.approx(
        warpzip["cpu_us_per_request"])
    for name in ("inline", "executor", "echo"):
        assert results[name]["device_cpu_seconds"] is None and results[name]["device_cpu_us_per_job"] is None
        assert results[name]["host_cpu_us_per_request"] == results[name]["cpu_us_per_request"]
    assert results["echo"]["ratio_to_echo_floor"] == 1.0
    best_peer = max(results["inline"]["req_per_s"], results["executor"]["req_per_s"])  # the echo is no peer
    assert warpzip["ratio_to_best_peer"] == pytest.approx(warpzip["req_per_s"] / best_peer)
    markdown = out.read_text()
    assert "## 4 KiB · 4 connections" in markdown
    assert all(f"| {name} | " in markdown for name in results)
    assert "× echo floor" in markdown and "device µs/job" in markdown
    assert "FAILED" not in markdown


def test_plots_for_a_sweep_and_for_one_concurrency(tmp_path: Path) -> None:
    sweep = [row("warpzip", 1000, Role.WARPZIP, connections=c, device_cpu_seconds=0.5) for c in (1, 4)]
    sweep += [row("inline", 900, connections=1), row("echo", 2000, Role.FLOOR, connections=4, cpu_seconds=0.2)]
    single = [row("warpzip", 1000, Role.WARPZIP, device_cpu_seconds=0.5), row("inline", 900),
              row("echo", 2000, Role.FLOOR, cpu_seconds=0.2)]
    assert [p.name for p in plots.plot(sweep, tmp_path / "a")] == [
        "servers-4kib.png", "servers-4kib-c4.png", "sweep-4kib.png"]
    assert [p.name for p in plots.plot(single, tmp_path / "b")] == ["servers-4kib.png"]
    for path in (tmp_path / "a/sweep-4kib.png", tmp_path / "a/servers-4kib-c4.png", tmp_path / "b/servers-4kib.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_stream_bench_reports_both_directions(tmp_path: Path) -> None:
    """``python -m bench.streams`` on a small body: a MiB/s line per direction, the round trip checked."""
    lines = bench_streams.run(12 << 20, 1, tmp_path)
    assert "round trip identical" in lines[0]
    assert lines[1].startswith("compress ") and lines[2].startswith("decompress ")
    assert all(float(line.split()[1]) > 0 for line in lines[1:])


def test_job_loop_reports_host_cpu_per_job() -> None:
    """``python -m bench.jobloop``, briefly: a device of its own, jobs on it, a figure per repeat,
    and no device left behind."""
    done = subprocess.run([sys.executable, "-m", "bench.jobloop", "--rounds", "5", "--repeats", "2"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = done.stdout.split(":", 1)[1].split()
    assert done.stdout.startswith("host CPU µs/job:") and len(figures) == 2
    assert all(float(f) > 0 for f in figures)
