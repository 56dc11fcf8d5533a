"""A thread-safe LRU memo bounded by bytes, for what a request path computes from an exact key (the
recall sources' results by their exact query, the two-stage ranker's state of known users)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ByteLRU"]

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Values by key, least recently used first out once the entries' sizes (given by the caller,
    in bytes) pass ``max_bytes``; ``max_bytes`` 0 stores nothing. Values must not be mutated by
    readers (callers store read-only arrays)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(int(max_bytes), 0)
        self.nbytes = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: V, nbytes: int) -> None:
        """Store ``value`` (about ``nbytes`` bytes, its key included) in place of the key's old value;
        an entry larger than the whole memo is not stored (and the old value is gone)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if nbytes > self.max_bytes:
                return
            self._entries[key] = (value, nbytes)
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes:
                _, (_, size) = self._entries.popitem(last=False)
                self.nbytes -= size

    def lru_keys(self) -> list[Hashable]:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def resize(self, max_bytes: int) -> None:
        """A new size; the memo is emptied."""
        with self._lock:
            self.max_bytes = max(int(max_bytes), 0)
            self._entries.clear()
            self.nbytes = 0
