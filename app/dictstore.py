"""Trained zstd dictionaries on disk, under ``--data-dir``: what every worker reads.

Workers are separate processes, so the directory is the one truth: a dictionary exists while its
file does (``<id>.zdict``), and a worker that holds a loaded copy checks the file before each use
(:mod:`app.dictionaries`), so a DELETE in one worker is seen by the next request in another.

A file is written to a temporary name, fsynced, renamed into place and the directory fsynced, so
a crash leaves either the old state or the new one, plus at worst a temporary file that is never
read (and is removed, with a log line, when a store opens). Each file starts with a magic and the
SHA-256 of the dictionary: a file that does not verify (a torn or corrupted write that got past the
rename, a disk error) is refused with a log line — never served, never loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import zstandard

from warp import codec

log = logging.getLogger("warpzip")

MAGIC: Final = b"WZDICT1\n"
HEADER: Final = len(MAGIC) + hashlib.sha256().digest_size
SUFFIX: Final = ".zdict"
TEMP_PREFIX: Final = ".tmp-"
#: Fewer samples than this train nothing useful (zstd's trainer often refuses them anyway).
MIN_SAMPLES: Final = 8
#: Smallest dictionary worth asking for; zstd's trainer wants room for its tables and some content.
MIN_SIZE: Final = 1 << 10
DEFAULT_SIZE: Final = 16 << 10


class StoreError(Exception):
    """A dictionary could not be made or kept; ``slug`` names the problem type the client gets."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug


@final
@dataclass(frozen=True)
class Entry:
    """A stored dictionary: its zstd id, its size in bytes, when it was written (epoch seconds)."""

    dict_id: int
    size: int
    created: float


def train(samples: Sequence[bytes], size: int) -> bytes:
    """A dictionary of at most ``size`` bytes trained on ``samples`` (zstd's cover trainer, as
    ``zstd --train``); slow for many samples, so the service runs it in a thread."""
    if len(samples) < MIN_SAMPLES:
        raise StoreError("too-few-samples", f"{len(samples)} samples; training needs at least {MIN_SAMPLES}")
    try:
        trained = zstandard.train_dictionary(size, list[bytes | bytearray | memoryview](samples))
    except zstandard.ZstdError as exc:
        raise StoreError("training-failed", f"zstd could not train a dictionary on these samples: {exc}") from None
    return trained.as_bytes()


@final
class DictionaryStore:
    """The dictionaries under ``directory``, at most ``max_count`` of them."""

    def __init__(self, directory: Path, max_count: int) -> None:
        self.directory = directory
        self.max_count = max_count

    def path(self, dict_id: int) -> Path:
        return self.directory / f"{dict_id}{SUFFIX}"

    def sweep(self) -> None:
        """Remove what a crash left: temporary files that never got their rename (each logged)."""
        for leftover in self._files(TEMP_PREFIX):
            log.warning("dictionary store: removing %s, left by an interrupted write", leftover)
            leftover.unlink(missing_ok=True)

    def read(self, dict_id: int) -> bytes | None:
        """The dictionary with this id, verified; None if there is none or its file is corrupt."""
        try:
            raw = self.path(dict_id).read_bytes()
        except FileNotFoundError:
            return None
        return _verified(raw, self.path(dict_id))

    def count(self) -> int:
        """How many dictionary files there are (unverified: a gauge, not a listing)."""
        return sum(1 for path in self._files("") if _id_of(path) is not None)

    def entries(self) -> list[Entry]:
        """Every dictionary that verifies, by id (a corrupt file is logged and left out)."""
        found = []
        for path in self._files(""):
            dict_id = _id_of(path)
            if dict_id is None:
                continue
            try:
                raw, stat = path.read_bytes(), path.stat()
            except FileNotFoundError:
                continue  # deleted by another worker meanwhile
            data = _verified(raw, path)
            if data is not None:
                found.append(Entry(dict_id, len(data), stat.st_mtime))
        return sorted(found, key=lambda entry: entry.dict_id)

    def add(self, data: bytes) -> int:
        """Keep ``data`` (a zstd dictionary) under its id, durably; its id. Refused when the store is
        full or the id is taken (``StoreError``)."""
        dict_id = codec.dictionary_id(data)
        if not dict_id:
            raise StoreError("training-failed", "the trainer produced no zstd dictionary id")
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.count() >= self.max_count:
                raise StoreError("too-many-dictionaries", f"the service keeps {self.max_count} dictionaries; "
                                 "DELETE one first")
            if self.path(dict_id).exists():
                raise StoreError("dictionary-exists", f"dictionary {dict_id} exists already")
            self._write(dict_id, MAGIC + hashlib.sha256(data).digest() + data)
        return dict_id

    def delete(self, dict_id: int) -> bool:
        """Retire a dictionary; False if there was none."""
        try:
            self.path(dict_id).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.directory)
        return True

    def _write(self, dict_id: int, content: bytes) -> None:
        """Write then rename: a crash leaves the old state or the new one, never half a file."""
        temp = self.directory / f"{TEMP_PREFIX}{dict_id}-{os.getpid()}"
        try:
            with temp.open("wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            temp.rename(self.path(dict_id))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Workers creating dictionaries at once count and write one at a time (the count bound)."""
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _files(self, prefix: str) -> list[Path]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        if prefix:
            return [self.directory / name for name in names if name.startswith(prefix)]
        return [self.directory / name for name in names if name.endswith(SUFFIX)]


def _id_of(path: Path) -> int | None:
    stem = path.name[:-len(SUFFIX)]
    return int(stem) if stem.isdigit() and stem.isascii() else None


def _verified(raw: bytes, path: Path) -> bytes | None:
    data = raw[HEADER:]
    if raw[:len(MAGIC)] != MAGIC or raw[len(MAGIC):HEADER] != hashlib.sha256(data).digest():
        log.error("dictionary store: %s fails its checksum; it is not served (restore or DELETE it)", path)
        return None
    return data


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
