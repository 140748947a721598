"""The render's load: four wrk phases against the service, with the bench's ``bench/post.lua``.

4 KiB bodies at 8 connections, 64 KiB at 32, then a mix of compress, decompress and corrupt
decompress bodies that are answered 400, all Silesia slices; then the mix again while faults are
injected into the device (:data:`FAULTS`), so the fault panels and the annotations have something
to show. Each phase is one wrk run; the window they span is what the panels are drawn over.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import wrk
from bench.bodies import Profile, Slice, materialise
from warp.tool.corpus import CORPUS_DIR

KIB = 1024
SMALL = (Slice("dickens", 4 * KIB), Slice("xml", 4 * KIB), Slice("mr", 4 * KIB))
LARGE = (Slice("dickens", 64 * KIB), Slice("x-ray", 64 * KIB), Slice("xml", 64 * KIB))
COMPRESS = "/compress?level=3"
DECOMPRESS = "/decompress"
REPO = Path(__file__).resolve().parent.parent

JOB_TIMEOUT = "1"
"""The server's --job-timeout for the render: the injected hang outlives it, so a queue reset happens."""

FAULTS = (
    (0.1, ("hw-error", "--count", "400")),
    (0.25, ("iopf-storm",)),
    (0.35, ("iopf-storm",)),
    (0.45, ("hang", "--seconds", "3")),
    (0.7, ("iopf-storm",)),
    (0.8, ("iopf-storm",)),
    (0.9, ("crash",)),
)
"""(fraction of the fault phase, ``warpzip device inject`` arguments): hardware errors (their jobs
re-run on the cpu), storms of I/O page faults (every page of every mapping reclaimed), a hang
past the job timeout (a queue reset), and a crash of the device (the server restarts it)."""


@dataclass(frozen=True)
class Phase:
    """One wrk run: a name for the figure caption, its connections, its (path, body file) list and
    the faults injected while it runs."""

    name: str
    connections: int
    requests: tuple[tuple[str, Path], ...]
    faults: tuple[tuple[float, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Window:
    """The load's wall-clock span and where each phase began, for the query range and the markers."""

    start: float
    end: float
    phases: tuple[tuple[str, float], ...]


def compress_via(url: str, body: bytes) -> bytes:
    """A valid zstd frame for the decompress requests, made by the service under test itself."""
    request = urllib.request.Request(url + COMPRESS, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def phases(tmp: Path, url: str) -> list[Phase]:
    """The four load phases over Silesia slices; the mix's corrupt body is raw text sent to
    /decompress, which the service answers 400 corrupt-frame (1 request in 8)."""
    bodies = tmp / "bodies"
    bodies.mkdir()
    materialise([Profile("render", SMALL + LARGE)], bodies, CORPUS_DIR)
    small = [bodies / piece.filename for piece in SMALL]
    large = [bodies / piece.filename for piece in LARGE]
    frames = []
    for source in (small[0], large[0]):
        frame = bodies / f"{source.stem}.zst"
        frame.write_bytes(compress_via(url, source.read_bytes()))
        frames.append(frame)
    mix = ((COMPRESS, small[1]), (COMPRESS, large[1]), (DECOMPRESS, frames[0]), (COMPRESS, small[2]),
           (COMPRESS, large[2]), (DECOMPRESS, frames[1]), (COMPRESS, small[0]), (DECOMPRESS, small[0]))
    return [
        Phase("4 KiB compress, 8 conns", 8, tuple((COMPRESS, path) for path in small)),
        Phase("64 KiB compress, 32 conns", 32, tuple((COMPRESS, path) for path in large)),
        Phase("mix + corrupt decompress, 16 conns", 16, mix),
        Phase("mix + injected faults", 16, mix[:-1], FAULTS),
    ]


def inject(root: Path, faults: tuple[tuple[float, tuple[str, ...]], ...], seconds: int) -> None:
    """Runs ``warpzip device inject`` at each fault's moment of a phase that began just now."""
    began = time.monotonic()
    for fraction, fault in faults:
        time.sleep(max(0.0, began + fraction * seconds - time.monotonic()))
        subprocess.run([sys.executable, "-m", "app", "device", "inject", "--root", str(root), *fault],
                       cwd=REPO, check=True, capture_output=True, timeout=10)


def run_wrk(url: str, root: Path, phase: Phase, seconds: int, procs: list[subprocess.Popen[bytes]]) -> str:
    """One wrk phase, its faults injected into the device under ``root``; returns its summary line.
    The Popen is registered first so an interrupt still stops it by PID."""
    proc = subprocess.Popen(wrk.command(url, phase.connections, seconds), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=wrk.requests_env(phase.requests))
    procs.append(proc)
    inject(root, phase.faults, seconds)
    output, _ = proc.communicate(timeout=seconds + 30)
    text = output.decode(errors="replace")
    try:
        result = wrk.parse_output(text)
    except ValueError:
        result = None
    if proc.returncode != 0 or result is None or result.requests == 0:
        raise RuntimeError(f"wrk failed in phase {phase.name!r}:\n{text}")
    return f"requests={result.requests} non2xx={result.non2xx} errors={result.errors}"


def drive_load(tmp: Path, url: str, root: Path, seconds: int, procs: list[subprocess.Popen[bytes]]) -> Window:
    """Runs the phases back to back against the server whose device is under ``root`` and returns
    their wall-clock window."""
    marks = []
    start = time.time()
    for phase in phases(tmp, url):
        marks.append((phase.name, time.time()))
        print(f"  {phase.name}: {run_wrk(url, root, phase, seconds, procs)}", flush=True)
    return Window(start, time.time(), tuple(marks))
