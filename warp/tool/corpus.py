"""The Silesia corpus every benchmark compresses: where it is, and its slices read on demand.

Real files, not random bytes: random data is incompressible, so zstd takes its fast path and a
benchmark would measure the wrong thing. The corpus ships bzip2-compressed in ``shared/`` and must
never be committed decompressed, hence slices read at run time, only as far as needed. Both
benchmarks read it here: ``warpzip bench device`` cuts it into job blocks (:func:`blocks`), the
HTTP benchmark (``bench.bodies``) writes request bodies from :func:`read_slice`.
"""

from __future__ import annotations

import bz2
import os
from pathlib import Path
from typing import Final


def find_corpus() -> Path:
    """The Silesia corpus: ``$WARPZIP_CORPUS``, else ``shared/corpus`` beside the repository or
    beside any directory above it (CI clones the repository elsewhere on the same machine), else
    the workplace's ``/work/shared/corpus``."""
    override = os.environ.get("WARPZIP_CORPUS")
    if override:
        return Path(override)
    for parent in Path(__file__).resolve().parents[1:]:
        candidate = parent / "shared" / "corpus"
        if candidate.is_dir():
            return candidate
    return Path("/work/shared/corpus")


CORPUS_DIR: Final = find_corpus()

SLICE_OFFSET: Final = 1024 * 1024
"""Skip file headers (DICOM, licence text) that do not compress like the rest of the file."""


def files(corpus: Path) -> list[Path]:
    """The corpus files (``*.bz2``), in name order."""
    return sorted(corpus.glob("*.bz2"))


def read_slice(path: Path, size: int, skip: int = SLICE_OFFSET) -> bytes:
    """Up to ``size`` bytes of the decompressed ``path`` from ``skip`` on, decompressing only
    that far (fewer if the file ends first)."""
    with bz2.open(path, "rb") as stream:
        stream.seek(skip)
        return stream.read(size)


def blocks(corpus: Path, block_size: int, total: int, skip: int = SLICE_OFFSET) -> list[bytes]:
    """Cut the corpus into blocks once: ``total`` bytes spread over the files (``*.bz2``
    decompressed, past ``skip`` bytes of headers; at least one block each), each file cut into
    consecutive ``block_size`` slices, the files interleaved so every stretch of the round-robin
    sees every kind of data. A file too short to give a block past ``skip`` is cut from its start."""
    found = files(corpus)
    if not found:
        raise FileNotFoundError(f"no *.bz2 corpus files in {corpus}")
    share = max(block_size, total // len(found) // block_size * block_size)
    per_file: list[list[bytes]] = []
    for path in found:
        data = read_slice(path, share, skip)
        if len(data) < block_size:
            data = read_slice(path, skip + share, 0)
        cut = [data[i:i + block_size] for i in range(0, len(data) - block_size + 1, block_size)]
        if cut:
            per_file.append(cut)
    if not per_file:
        raise ValueError(f"no corpus file in {corpus} holds a {block_size}-byte block")
    return [piece[i] for i in range(max(map(len, per_file))) for piece in per_file if i < len(piece)]
