"""User histories at serving time: the release's interactions plus events received since it loaded.

`MemoryHistory` keeps the new events in process memory (per worker: with several workers and no
shared store, an event is seen by the worker that received it). A `FeatureStore` (embedded or
Redis, `recstack.store`) replaces it when configured: `StoreHistory` adapts one.

With a store, the store is the only holder of the release's histories in a worker (Redis: none in
the worker at all; issue 23: two workers of a 25M release each held a copy of what Redis holds).
`MemoryHistory` (no store) holds them itself, as CSR arrays built from the release's interactions.

Degrading explicitly. When the store cannot answer a read (Redis down, timing out, or restarted
empty), `StoreHistory.get` does not fail the request and does not pretend either: it returns an
empty history (the worker holds no copy of the user's history) with ``degraded`` saying that the
user's history is missing and why; the API puts that in the response body and counts it in
``recstack_degraded_total``: the answer is the one of a user without history (popular items, which
may include some the user saw). Writes (`append`) are never degraded: they fail with a 503 and store
nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from recstack.errors import InvalidArgumentError, UnavailableError
from recstack.serving._catalog import Catalog
from recstack.store.base import HistoryArrays, build_histories

__all__ = ["EVENT_KINDS", "History", "HistoryBackend", "MemoryHistory", "StoreHistory"]

EVENT_KINDS = ("view", "click", "rating")


@dataclass(frozen=True)
class History:
    """A user's interactions, oldest first: item indices, ratings (NaN for views / clicks) and Unix
    timestamps in seconds."""

    items: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.int64]
    #: why this history may lack the user's online events (None: complete)
    degraded: str | None = None

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @staticmethod
    def empty() -> History:
        return History(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))


class HistoryBackend(Protocol):
    """Where the pipeline reads and appends user histories."""

    def get(self, user_key: str, user_idx: int | None) -> History: ...

    def append(
        self,
        user_key: str,
        user_idx: int | None,
        item_idx: int,
        kind: str,
        rating: float | None,
        ts: int,
        offset: int | None = None,
    ) -> int:
        """Store one event (at most once per event-log ``offset``); the user's history length after it."""
        ...


class MemoryHistory:
    """The release's histories (CSR arrays built from the catalogue's interactions, ordered by time)
    + an in-process overlay of new events."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        #: every known user's release history (`recstack.store.build_histories`)
        self.base: HistoryArrays = build_histories(catalog.interactions(), catalog.n_users)
        self._lock = threading.Lock()
        self._extra: dict[str, tuple[list[int], list[float], list[int]]] = {}
        self._offsets: set[int] = set()

    def get(self, user_key: str, user_idx: int | None) -> History:
        if user_idx is not None:
            a, b = int(self.base.indptr[user_idx]), int(self.base.indptr[user_idx + 1])
            items, ratings, times = self.base.items[a:b], self.base.ratings[a:b], self.base.timestamps[a:b]
        else:
            items, ratings, times = np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        extra = self._extra.get(user_key)
        if extra is None:
            return History(items, ratings, times)
        with self._lock:
            ei, er, et = (list(x) for x in extra)
        return History(
            np.concatenate([items, np.asarray(ei, np.int64)]),
            np.concatenate([ratings, np.asarray(er, np.float32)]),
            np.concatenate([times, np.asarray(et, np.int64)]),
        )

    def append(
        self,
        user_key: str,
        user_idx: int | None,
        item_idx: int,
        kind: str,
        rating: float | None,
        ts: int,
        offset: int | None = None,
    ) -> int:
        if not 0 <= ts < 2**63:
            raise InvalidArgumentError(f"timestamp {ts} must be Unix seconds between 0 and 2**63 - 1")
        with self._lock:
            if offset is None or offset not in self._offsets:
                if offset is not None:
                    self._offsets.add(offset)
                ei, er, et = self._extra.setdefault(user_key, ([], [], []))
                ei.append(int(item_idx))
                er.append(float("nan") if rating is None else float(rating))
                et.append(int(ts))
        return len(self.get(user_key, user_idx))


class StoreHistory:
    """Adapts a `recstack.store` FeatureStore: the store holds the release's histories and appends
    events (shared by every worker when it is Redis); the worker holds no copy of them."""

    def __init__(self, store: Any, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog

    def get(self, user_key: str, user_idx: int | None) -> History:
        try:
            raw = self.store.get_history(user_key if user_idx is None else user_idx)
        except UnavailableError as exc:
            return History(
                np.zeros(0, np.int64),
                np.zeros(0, np.float32),
                np.zeros(0, np.int64),
                degraded=f"history missing: {exc.message}",
            )
        return _as_history(raw)

    def append(
        self,
        user_key: str,
        user_idx: int | None,
        item_idx: int,
        kind: str,
        rating: float | None,
        ts: int,
        offset: int | None = None,
    ) -> int:
        key = user_key if user_idx is None else user_idx
        return int(self.store.append_event(key, int(item_idx), kind, rating, ts, offset=offset))

    def health(self) -> dict[str, Any]:
        """The store's own report (Redis: ``status`` ok / unavailable / empty); in process: ok."""
        probe = getattr(self.store, "health", None)
        return dict(probe()) if probe is not None else {"status": "ok", "detail": None}


def _as_history(raw: Any) -> History:
    """Accept the store's history (an object with items / ratings / timestamps, or a bare array)."""
    if raw is None:
        return History.empty()
    if hasattr(raw, "items") and not callable(raw.items):
        items = np.asarray(raw.items, dtype=np.int64)
        n = len(items)
        ratings = np.asarray(getattr(raw, "ratings", np.full(n, np.nan)), dtype=np.float32)
        times = np.asarray(getattr(raw, "timestamps", np.zeros(n)), dtype=np.int64)
        return History(items, ratings, times)
    items = np.asarray(raw, dtype=np.int64).ravel()
    return History(items, np.full(len(items), np.nan, np.float32), np.zeros(len(items), np.int64))


def now() -> int:
    return int(time.time())
