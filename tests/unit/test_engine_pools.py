"""Engine pools without a device process: the pool and timing options of ``warpzip device`` and
``warpzip bench device`` (flags, ``WARPZIP_*`` variables, refusals), the timing model's arithmetic
and the saturation curve's default points and table. The device itself: tests/integration/test_fidelity_pools.py."""

from __future__ import annotations

import pytest

from warp import abi
from warp.device.main import parse_args
from warp.device.pool import PoolSizes, Timing
from warp.tool.bench.options import parse_options
from warp.tool.bench.saturation import Point, default_inflight, render_curve


def test_pools_default_to_engines_and_read_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--engines`` sizes every pool that has no size of its own; a pool's flag or variable wins."""
    args = parse_args([])
    assert (args.comp_engines, args.decomp_engines, args.bd_latency_us, args.engine_mb_s) == (2, 2, 0.0, 0.0)
    assert (parse_args(["--engines", "3"]).comp_engines, parse_args(["--engines", "3"]).decomp_engines) == (3, 3)
    monkeypatch.setenv("WARPZIP_DECOMP_ENGINES", "6")
    monkeypatch.setenv("WARPZIP_BD_LATENCY_US", "250")
    args = parse_args(["--engines", "1"])
    assert (args.comp_engines, args.decomp_engines, args.bd_latency_us) == (1, 6, 250.0)
    assert parse_args(["--decomp-engines", "4"]).decomp_engines == 4  # the flag wins over the variable


@pytest.mark.parametrize("argv", [["--comp-engines", "0"], ["--decomp-engines", "0"], ["--engines", "0"],
                                  ["--bd-latency-us", "-1"], ["--engine-mb-s", "-5"]])
def test_device_refuses_empty_pools_and_negative_timing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_variable_for_a_pool_is_checked_under_its_name(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WARPZIP_COMP_ENGINES", "two")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "WARPZIP_COMP_ENGINES: not an integer: 'two'" in capsys.readouterr().err


def test_pool_sizes_number_engines_compression_first() -> None:
    sizes = PoolSizes(2, 6)
    assert sizes.total == 8
    assert sizes.ids(abi.QcType.COMPRESS) == range(0, 2) and sizes.ids(abi.QcType.DECOMPRESS) == range(2, 8)
    with pytest.raises(ValueError, match="at least one engine"):
        PoolSizes(0, 1)


def test_timing_model_costs_a_bd_its_latency_plus_its_uncompressed_bytes() -> None:
    assert not Timing().on
    model = Timing(latency_us=100, mb_s=1000)  # 1000 MB/s: 1 ns per byte
    assert model.on
    assert model.cost_ns(abi.QcType.COMPRESS, consumed=65536, produced=20000) == 100_000 + 65536
    assert model.cost_ns(abi.QcType.DECOMPRESS, consumed=20000, produced=65536) == 100_000 + 65536
    assert Timing(latency_us=50).cost_ns(abi.QcType.COMPRESS, 0, 0) == 50_000  # a failed BD costs its latency
    with pytest.raises(ValueError, match="must not be negative"):
        Timing(latency_us=-1)


def test_default_curve_goes_four_times_past_the_pool_within_the_queues() -> None:
    assert default_inflight(2, 32) == (1, 2, 4, 8)
    assert default_inflight(6, 32) == (1, 2, 4, 8, 16)
    assert default_inflight(6, 10) == (1, 2, 4, 8)


def test_curve_table_shows_the_rise_against_one_in_flight() -> None:
    points = [Point("compress", 1, 50, 50 * 4096, 10**9, 50 * 20_000_000),
              Point("compress", 2, 100, 100 * 4096, 10**9, 100 * 20_000_000)]
    table = render_curve(points, {"compress": 2, "decompress": 2})
    assert "compress pool (2 engines)" in table and "decompress pool" not in table
    last = table.splitlines()[-1].split()
    assert last[0] == "2" and last[2] == "100.0" and last[3] == "20000" and last[4] == "2.00"


def test_bench_passes_pool_and_timing_flags_to_the_device_it_starts() -> None:
    opts = parse_options(["--saturation", "--engines", "2", "--decomp-engines", "6", "--bd-latency-us", "500",
                          "--inflight", "1,2,4"])
    assert opts.saturation and opts.inflight == (1, 2, 4)
    assert opts.device_args == ("--engines", "2", "--decomp-engines", "6", "--bd-latency-us", "500.0")
    assert parse_options([]).device_args == ("--engines", "1")


@pytest.mark.parametrize("argv", [["--comp-engines", "0"], ["--bd-latency-us", "-1"], ["--inflight", "0,2"]])
def test_bench_refuses_bad_pool_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_options(argv)
    assert exc.value.code == 2


def test_bench_notes_that_a_running_device_keeps_its_pools() -> None:
    opts = parse_options(["--root", "/tmp/x", "--comp-engines", "3"])
    assert any("ignored with --root" in note for note in opts.notes)
