"""One worker's dictionaries in its SVA heap: the store's files, loaded once and checked per use.

A request that names a dictionary (``/compress?dict=``, or a frame sent to ``/decompress``) needs
it in the heap, where the device reads it (:meth:`warp.runtime.Runtime.dictionary`). Loading —
read, verify, copy — happens once per dictionary and worker; each use only ``stat``s the file
(a few microseconds, and only for requests that name a dictionary), so a dictionary another worker
deleted or replaced is never served from a stale copy. A copy no longer current is freed after
``grace`` seconds — past the longest a request that named it may still use it (its body arriving,
then ``--job-timeout`` on the device and again on the cpu) — never under a running job.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import final

from app.dictstore import DictionaryStore
from warp import Dictionary, Runtime

#: A file's identity: a new write (even of the same id) is a new inode and mtime.
Signature = tuple[int, int, int]


@final
@dataclass(frozen=True)
class DictionaryStats:
    """What ``/metrics`` reads: the store's dictionaries, this worker's loaded copies, and the
    requests that found theirs, by direction."""

    stored: int
    loaded: int
    used: tuple[tuple[str, int], ...]


@final
class WorkerDictionaries:
    """The dictionaries of ``store`` this worker has loaded into ``runtime``'s heap."""

    def __init__(self, store: DictionaryStore, runtime: Runtime, grace: float) -> None:
        self.store = store
        self._runtime = runtime
        self._grace = grace
        self._loaded: dict[int, tuple[Signature, Dictionary]] = {}
        self._paths: dict[int, str] = {}
        #: Requests that found their dictionary, by direction (``warpzip_dictionary_requests_total``).
        self._used = {"compress": 0, "decompress": 0}

    def named(self, dict_id: int) -> Dictionary | None:
        """:meth:`get`, for a request that names the dictionary to compress with."""
        found = self.get(dict_id)
        self._used["compress"] += found is not None
        return found

    def resolve(self, dict_id: int) -> Dictionary | None:
        """:meth:`get`, for a frame to decompress (a :data:`warp.dictionary.Resolver`)."""
        found = self.get(dict_id)
        self._used["decompress"] += found is not None
        return found

    def get(self, dict_id: int) -> Dictionary | None:
        """The dictionary with this id as the store has it now; None if it has none (or only a
        corrupt file)."""
        path = self._paths.get(dict_id)
        if path is None:
            path = self._paths[dict_id] = str(self.store.path(dict_id))  # a Path costs more than the stat
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            self._retire(dict_id)
            return None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        kept = self._loaded.get(dict_id)
        if kept is not None and kept[0] == signature:
            return kept[1]
        self._retire(dict_id)
        data = self.store.read(dict_id)
        if data is None:
            return None
        dictionary = self._runtime.dictionary(data)
        self._loaded[dict_id] = (signature, dictionary)
        return dictionary

    def __len__(self) -> int:
        return len(self._loaded)

    def statistics(self) -> DictionaryStats:
        return DictionaryStats(self.store.count(), len(self._loaded), tuple(self._used.items()))

    def _retire(self, dict_id: int) -> None:
        self._paths.pop(dict_id, None)
        kept = self._loaded.pop(dict_id, None)
        if kept is not None:
            asyncio.get_running_loop().call_later(self._grace, kept[1].close)
