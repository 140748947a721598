"""Tests of the benchmark harness: its pure parts exactly, its I/O parts by one short real run.

The smoke run measures nothing (no timed assertions): it proves that the peers answer correctly
under wrk, that the report carries their numbers, and that no server process outlives the driver.
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

from bench import corpus, plots, proctree, wrk
from bench import server as server_module
from bench.driver import parse_connections, parse_servers
from bench.report import Meta, Row, ratios_to_best_peer, render_markdown, to_json
from bench.server import REPO_ROOT, SERVERS, RunningServer, ServerSpec, check_answer

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


def row(server: str, requests: int | None, is_peer: bool = True, connections: int = 32) -> Row:
    measured = None if requests is None else result(requests)
    failure = "exited with code 1" if requests is None else None
    return Row(server, is_peer, "4 KiB", connections, 4096, measured, 1.5, 64 * 1024 * 1024, failure)


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


def test_ratio_is_against_the_best_peer_under_the_same_load() -> None:
    rows = [
        row("warpzip", 3000, is_peer=False),
        row("inline", 1000),
        row("inline-2proc", 2000),
        row("executor", None),
        row("inline", 500, connections=1),
        row("warpzip", 1000, is_peer=False, connections=1),
    ]
    assert ratios_to_best_peer(rows) == [1.5, 0.5, 1.0, None, 1.0, 2.0]


def test_ratio_is_absent_without_peers() -> None:
    assert ratios_to_best_peer([row("warpzip", 3000, is_peer=False)]) == [None]


def test_render_markdown_has_header_table_and_failures() -> None:
    rows = [row("warpzip", None, is_peer=False), row("inline", 14300)]
    markdown = render_markdown(META, rows)
    assert "- command: `python -m bench`" in markdown
    assert "- CPU: Test CPU, 2 cores" in markdown
    assert "## 4 KiB · 32 connections" in markdown
    assert "| inline | 14,300 | 58.6 | 1.00 | 4.00 | 1.5 | 105 | 64.0 | 0 / 0 | 1.00× |" in markdown  # 1.5 s / 14,300
    assert "| warpzip | **FAILED** |" in markdown
    assert "- warpzip FAILED: exited with code 1" in markdown


def test_json_carries_derived_numbers() -> None:
    document = to_json(META, [row("inline", 100)])
    assert document["meta"]["cores"] == 2
    (entry,) = document["results"]
    assert entry["req_per_s"] == pytest.approx(100.0)
    assert entry["ratio_to_best_peer"] == 1.0
    assert entry["cpu_us_per_request"] == pytest.approx(15_000.0)  # 1.5 CPU s over 100 responses
    assert entry["wrk"]["p99_us"] == 4000


def test_cli_lists_are_parsed() -> None:
    labels = [profile.label for profile in corpus.parse_profiles(["256,4KiB", "mixed", "4k"])]
    assert labels == ["256 B", "4 KiB", "mixed"]
    assert parse_connections(["1,4", "16"]) == [1, 4, 16]
    assert [spec.name for spec in parse_servers(["inline,executor"])] == ["inline", "executor"]
    for bad in (lambda: corpus.parse_profiles(["3k"]), lambda: parse_connections(["0"])):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        parse_servers(["nginx"])


def test_mixed_profile_is_described_and_averaged() -> None:
    mixed = corpus.PROFILES["mixed"]
    assert len(mixed.slices) == 13
    assert mixed.mean_size == pytest.approx((4 * (256 + 4096 + 65536) + 1024 * 1024) / 13)
    assert corpus.describe(mixed).endswith("dickens/mr/x-ray/xml at 64 KiB, dickens at 1 MiB (round-robin)")
    assert corpus.describe(corpus.PROFILES["4k"]) == "dickens at 4 KiB"


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
    spec = ServerSpec("stubborn", lambda _port, _scratch: [sys.executable, "-c", stubborn], is_peer=True)
    server = RunningServer(spec, tmp_path)
    tree: set[proctree.ProcessKey] = set()
    while len(tree) < 2:  # wait for the fork
        tree = {stat.key for stat in proctree.snapshot_tree(server.process.pid)}
    server.stop()
    assert server.process.returncode == -signal.SIGKILL
    assert proctree.kill_tree(tree) == []


@pytest.mark.e2e
def test_wrk_sends_bodies_round_robin(inline_2proc: RunningServer, tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk")
    bodies = [tmp_path / "small", tmp_path / "large"]
    bodies[0].write_bytes(b"s" * 100)  # answered with ~140 bytes
    bodies[1].write_bytes(os.urandom(50_000))  # incompressible: answered with ~50,150 bytes
    measured = wrk.run(inline_2proc.url(3), 2, 1, bodies)
    assert measured.requests > 0
    assert (measured.non2xx, measured.errors) == (0, 0)
    assert 20_000 < measured.bytes / measured.requests < 30_000  # half of each, not all of one


@pytest.mark.e2e
def test_driver_smoke_run(tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk")
    require(corpus.CORPUS_DIR.is_dir(), f"the corpus at {corpus.CORPUS_DIR}")
    out, report = tmp_path / "run.md", tmp_path / "run.json"
    argv = "--servers warpzip,inline,executor --sizes 4k --duration 2 --warmup 0 --connections 4".split()
    argv += ["--out", str(out), "--json", str(report)]
    completed = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=90
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(report.read_text())["results"]
    assert [entry["server"] for entry in results] == ["warpzip", "inline", "executor"]
    for entry in results:
        assert entry["failure"] is None
        assert entry["req_per_s"] > 0
        assert (entry["wrk"]["non2xx"], entry["wrk"]["errors"]) == (0, 0)
        assert entry["cpu_seconds"] > 0
    markdown = out.read_text()
    assert "## 4 KiB · 4 connections" in markdown
    assert "| warpzip | " in markdown and "| inline | " in markdown and "| executor | " in markdown
    assert "FAILED" not in markdown


def test_plots_for_a_sweep_and_for_one_concurrency(tmp_path: Path) -> None:
    sweep = [row("warpzip", 1000, is_peer=False, connections=c) for c in (1, 4)] + [row("inline", 900, connections=1)]
    single = [row("warpzip", 1000, is_peer=False), row("warpzip-2w", 1200, is_peer=False), row("inline", 900)]
    assert [p.name for p in plots.plot(sweep, tmp_path / "a")] == ["sweep-4kib.png"]
    assert [p.name for p in plots.plot(single, tmp_path / "b")] == ["servers-4kib.png"]
    for path in (tmp_path / "a/sweep-4kib.png", tmp_path / "b/servers-4kib.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
