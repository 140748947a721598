"""Request bodies: named mixes of Silesia corpus slices, written at run time into a directory.

The corpus itself (where it is, how a slice is read) is :mod:`warp.tool.corpus`, shared with
``warpzip bench device``; this module only says which slices a request body profile sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from warp.tool.corpus import CORPUS_DIR, SLICE_OFFSET, read_slice
from warp.tool.units import human_size

FIXED_SOURCE = "dickens"
"""Fixed-size profiles use English text, the typical body an HTTP compression service sees."""

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Slice:
    """``size`` bytes of the decompressed corpus file ``source`` (without ``.bz2``)."""

    source: str
    size: int

    @property
    def filename(self) -> str:
        return f"{self.source}-{self.size}.bin"


@dataclass(frozen=True)
class Profile:
    """A named body mix; wrk sends its slices round-robin, one per request."""

    label: str
    slices: tuple[Slice, ...]

    @property
    def mean_size(self) -> float:
        """Mean body size, the factor from requests per second to input bytes per second."""
        return sum(piece.size for piece in self.slices) / len(self.slices)


def _fixed(size: int) -> Profile:
    return Profile(human_size(size), (Slice(FIXED_SOURCE, size),))


def _mixed() -> Profile:
    """Every corpus file at 256 B, 4 KiB and 64 KiB, plus one 1 MiB text body per cycle.

    The one large body among twelve small ones is what tells the servers apart: it blocks an
    inline server's loop, which shows in the small requests' p99.
    """
    sources = ("dickens", "mr", "x-ray", "xml")
    small = tuple(Slice(source, size) for size in (256, 4 * KIB, 64 * KIB) for source in sources)
    return Profile("mixed", (*small, Slice(FIXED_SOURCE, MIB)))


PROFILES: dict[str, Profile] = {
    "256": _fixed(256),
    "4k": _fixed(4 * KIB),
    "64k": _fixed(64 * KIB),
    "1m": _fixed(MIB),
    "mixed": _mixed(),
}
"""CLI name → profile, in the order the report lists them."""


def describe(profile: Profile) -> str:
    """What a profile sends, e.g. ``dickens at 4 KiB`` or, for a mix, each size with its sources."""
    sources_by_size: dict[int, list[str]] = {}
    for piece in profile.slices:
        sources_by_size.setdefault(piece.size, []).append(piece.source)
    parts = [f"{'/'.join(sources)} at {human_size(size)}" for size, sources in sources_by_size.items()]
    return ", ".join(parts) + (" (round-robin)" if len(profile.slices) > 1 else "")


_ALIASES = {"256b": "256", "4kib": "4k", "64kib": "64k", "1mib": "1m"}


def parse_profiles(names: Sequence[str]) -> list[Profile]:
    """Maps CLI names (``256``, ``4k``, ``64KiB``, ``1m``, ``mixed``, comma lists allowed) to profiles."""
    chosen: list[Profile] = []
    for name in (part.strip().lower() for item in names for part in item.split(",") if part.strip()):
        key = _ALIASES.get(name, name)
        if key not in PROFILES:
            raise ValueError(f"unknown size {name!r}; choose from {', '.join(PROFILES)}")
        if PROFILES[key] not in chosen:
            chosen.append(PROFILES[key])
    return chosen


def materialise(profiles: Sequence[Profile], directory: Path, corpus: Path = CORPUS_DIR) -> None:
    """Writes every slice the profiles need into ``directory``, decompressing each corpus file once
    and only as far as the largest slice taken from it."""
    needed: dict[str, int] = {}
    for piece in (piece for profile in profiles for piece in profile.slices):
        needed[piece.source] = max(needed.get(piece.source, 0), piece.size)
    for source, size in needed.items():
        data = read_slice(corpus / f"{source}.bz2", size)
        if len(data) < size:
            raise ValueError(f"{source}.bz2 is too short for a {size}-byte slice at {SLICE_OFFSET}")
        for piece in (piece for profile in profiles for piece in profile.slices):
            if piece.source == source:
                (directory / piece.filename).write_bytes(data[: piece.size])


def body_paths(profile: Profile, directory: Path) -> list[Path]:
    """The files :func:`materialise` wrote for ``profile``, in round-robin order."""
    return [directory / piece.filename for piece in profile.slices]
