"""Loaded zstd dictionaries, kept per executor (a device engine, a cpu worker thread).

Digesting a dictionary (``ZSTD_createCDict``: building its match tables at a level) costs far more
than compressing one small body with it — that cost is why one would keep it, as the hardware
keeps a context it has fetched. So each engine and each cpu thread keeps the dictionaries it loaded,
keyed by who named them and where, in a small LRU, and loads one again only after evicting it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final, final

#: Loaded dictionaries one executor keeps: a few per service, each at one or two levels.
CAPACITY: Final = 16


@final
class LoadedDictionaries:
    """A bounded LRU from a key to a loaded ``ZSTD_CDict``/``ZSTD_DDict``; ``loads`` counts misses."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.loads = 0
        self._loaded: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The dictionary under ``key``, loaded by ``load()`` if it is not kept (the oldest one
        is freed to make room)."""
        loaded = self.find(key)
        return loaded if loaded is not None else self.keep(key, load())

    def find(self, key: Hashable) -> Any:
        """The dictionary kept under ``key`` (now the most recently used), or None."""
        loaded = self._loaded.get(key)
        if loaded is not None:
            self._loaded.move_to_end(key)
        return loaded

    def keep(self, key: Hashable, loaded: Any) -> Any:
        """Keep a dictionary just loaded (a miss of :meth:`find`); returns it."""
        self.loads += 1
        self._loaded[key] = loaded
        if len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return loaded

    def __len__(self) -> int:
        return len(self._loaded)
