"""The dictionary store (app/dictstore.py), a worker's loaded copies (app/dictionaries.py) and the
loaded-dictionary LRU (warp/dictcache.py): durable writes, checksums, bounds, staleness, eviction."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.api.dictionaries import named
from app.api.errors import Problem
from app.dictionaries import DictionaryStats, WorkerDictionaries
from app.dictstore import MAGIC, DictionaryStore, StoreError, train
from bench.events import events
from warp import Runtime
from warp.dictcache import LoadedDictionaries


@pytest.fixture(scope="module")
def samples() -> list[bytes]:
    return events(200)


@pytest.fixture(scope="module")
def trained(samples: list[bytes]) -> bytes:
    return train(samples, 4 << 10)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with Runtime(driver="cpu", heap_size=1 << 20) as rt:
        yield rt


def test_add_read_list_delete(tmp_path: Path, trained: bytes) -> None:
    store = DictionaryStore(tmp_path / "data", 4)
    assert store.entries() == [] and not (tmp_path / "data").exists(), "nothing is created before the first add"
    dict_id = store.add(trained)
    assert store.read(dict_id) == trained
    assert [(e.dict_id, e.size) for e in store.entries()] == [(dict_id, len(trained))]
    assert store.delete(dict_id) and not store.delete(dict_id)
    assert store.read(dict_id) is None and store.entries() == []


def test_bounds_and_duplicates(tmp_path: Path, trained: bytes, samples: list[bytes]) -> None:
    store = DictionaryStore(tmp_path, 1)
    store.add(trained)
    with pytest.raises(StoreError) as full:
        store.add(train(samples[:100], 4 << 10))
    assert full.value.slug == "too-many-dictionaries"
    with pytest.raises(StoreError) as twice:
        DictionaryStore(tmp_path, 2).add(trained)
    assert twice.value.slug == "dictionary-exists"
    with pytest.raises(StoreError) as raw:
        DictionaryStore(tmp_path, 2).add(b"raw content, not a zstd dictionary")
    assert raw.value.slug == "training-failed"


def test_training_refusals() -> None:
    with pytest.raises(StoreError) as few:
        train(events(7), 4 << 10)
    assert few.value.slug == "too-few-samples"
    with pytest.raises(StoreError) as failed:
        train([b""] * 20, 4 << 10)
    assert failed.value.slug == "training-failed"


def test_a_torn_or_corrupt_file_is_never_read(tmp_path: Path, trained: bytes, caplog: pytest.LogCaptureFixture) -> None:
    store = DictionaryStore(tmp_path, 8)
    dict_id = store.add(trained)
    path = store.path(dict_id)
    raw = path.read_bytes()
    for broken in (raw[:-100], raw[:len(MAGIC) + 5], raw[:-1] + bytes([raw[-1] ^ 1]), b"WZDICT0\n" + raw[8:]):
        path.write_bytes(broken)
        with caplog.at_level(logging.ERROR, "warpzip"):
            assert store.read(dict_id) is None and store.entries() == []
        assert "fails its checksum" in caplog.text
        caplog.clear()
    path.write_bytes(MAGIC + hashlib.sha256(trained).digest() + trained)
    assert store.read(dict_id) == trained


def test_sweep_removes_leftover_temp_files(tmp_path: Path, trained: bytes, caplog: pytest.LogCaptureFixture) -> None:
    store = DictionaryStore(tmp_path, 8)
    dict_id = store.add(trained)
    (tmp_path / ".tmp-1-2").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not ours")
    with caplog.at_level(logging.WARNING, "warpzip"):
        store.sweep()
    assert "interrupted write" in caplog.text
    assert sorted(os.listdir(tmp_path)) == [".lock", f"{dict_id}.zdict", "notes.txt"]
    assert [e.dict_id for e in store.entries()] == [dict_id]


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path, trained: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DictionaryStore(tmp_path, 8)

    def disk_error(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError):
        store.add(trained)
    assert sorted(os.listdir(tmp_path)) == [".lock"], "neither the temp file nor a half dictionary is left"


def test_worker_copies_follow_the_files(tmp_path: Path, trained: bytes, samples: list[bytes],
                                        runtime: Runtime) -> None:
    async def scenario() -> None:
        store = DictionaryStore(tmp_path, 8)
        dict_id = store.add(trained)
        worker = WorkerDictionaries(store, runtime, grace=0.05)
        first = worker.get(dict_id)
        assert first is not None and bytes(first.view) == trained
        assert worker.get(dict_id) is first and len(worker) == 1, "loaded once"
        assert worker.named(dict_id) is worker.resolve(dict_id) is first
        assert worker.statistics() == DictionaryStats(stored=1, loaded=1, used=(("compress", 1), ("decompress", 1)))
        used = runtime.statistics().heap.in_use_bytes
        store.delete(dict_id)
        assert worker.get(dict_id) is None and len(worker) == 0, "no stale copy after a DELETE elsewhere"
        assert runtime.statistics().heap.in_use_bytes == used, "freed only after the grace period"
        await asyncio.sleep(0.1)
        assert runtime.statistics().heap.in_use_bytes < used
        assert worker.get(12345) is None

    asyncio.run(scenario())


def test_a_dict_the_heap_cannot_hold_is_a_503(tmp_path: Path, samples: list[bytes]) -> None:
    store = DictionaryStore(tmp_path, 8)
    dict_id = store.add(train(samples, 64 << 10))
    assert len(store.read(dict_id) or b"") > 32 << 10
    with Runtime(driver="cpu", heap_size=32 << 10) as small:
        with pytest.raises(Problem) as caught:
            named(WorkerDictionaries(store, small, grace=1.0), str(dict_id))
    assert caught.value.status == 503


def test_lru_loads_once_and_evicts_the_oldest() -> None:
    lru = LoadedDictionaries(capacity=2)
    made: list[str] = []

    def loader(name: str) -> Callable[[], object]:
        def load() -> object:
            made.append(name)
            return name
        return load

    assert lru.get("a", loader("a")) == "a" and lru.get("a", loader("a")) == "a"
    lru.get("b", loader("b"))
    lru.get("a", loader("a"))  # a is now the most recent
    lru.get("c", loader("c"))  # evicts b
    lru.get("b", loader("b"))
    assert made == ["a", "b", "c", "b"] and lru.loads == 4 and len(lru) == 2
