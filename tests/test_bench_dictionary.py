"""``python -m bench --dictionary``: a short real run (one server, wrk, both variants) reports a
ratio and a throughput for each, the dictionary's ratio the higher; a server that cannot train
fails the measurement with :class:`ServerFailed` (the driver's FAILED line), not a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import dictbench
from bench.events import events
from bench.server import REPO_ROOT, ServerFailed
from bench.wrk import WrkResult
from tests.harness import require_tool


def test_dictionary_smoke_run(tmp_path: Path) -> None:
    require_tool("wrk")
    out = tmp_path / "dict.md"
    argv = ["--dictionary", "--sizes", "4k", "--duration", "1", "--warmup", "0", "--connections", "4",
            "--out", str(out)]
    completed = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    rows = re.findall(r"^\| (no dictionary|dictionary \d+ \([^)]*\)) \| ([\d.]+) \| ([\d,]+) \|", out.read_text(), re.M)
    assert len(rows) == 2, out.read_text()
    (_, plain_ratio, plain_rps), (_, dict_ratio, dict_rps) = rows
    assert float(dict_ratio) > float(plain_ratio) > 1
    assert int(plain_rps.replace(",", "")) > 0 and int(dict_rps.replace(",", "")) > 0


def test_a_server_that_cannot_train_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dictbench, "SAMPLES", 3)  # fewer than the service trains on: POST /dictionaries is a 400
    with pytest.raises(ServerFailed, match="POST /dictionaries: HTTP 400"):
        dictbench.measure(tmp_path, 1024, 3, 1, 1, 0)


def test_render_compares_the_two_variants() -> None:
    result = WrkResult(requests=1000, duration_us=1_000_000, non2xx=0, errors=0, p50_us=1000, p90_us=2000,
                       p99_us=3000, bytes=0)
    rows = [dictbench.Variant("no dictionary", 2.0, result), dictbench.Variant("dictionary 7", 5.0, result)]
    text = dictbench.render(rows, len(events(1)[0]), 3, 4, 1)
    assert "| no dictionary | 2.00 | 1,000 | 1.00 | 3.00 | 0 |" in text
    assert "2.50x the ratio without; throughput 1.00x" in text
