"""In-process feature store: dense numpy arrays held in memory (or memory-mapped from ``.npy``).

Reads of a contiguous id range return read-only views (no copy); other reads gather with one
``np.take`` per feature. Appended events live in process memory (one worker's view; use the Redis
store to share them between workers), bounded by `EventLimits`: a per-user ring of the last
``max_events`` events, and an LRU of at most ``max_users`` users (the least recently active go).
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError
from recstack.store.base import (
    EventLimits,
    FeatureArrays,
    FeatureStore,
    History,
    HistoryArrays,
    UserKey,
    build_histories,
    encode_table,
    schema_of,
    sort_history,
)

__all__ = ["EmbeddedFeatureStore"]

_META = "store.json"
_FORMAT = 1


class EmbeddedFeatureStore(FeatureStore):
    """Feature arrays ``{name: [n_users | n_items, ...]}`` plus CSR histories, all in memory."""

    def __init__(
        self,
        release_id: str,
        users: Mapping[str, npt.NDArray[Any]],
        items: Mapping[str, npt.NDArray[Any]],
        histories: HistoryArrays,
        vocabularies: Mapping[str, list[str]] | None = None,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        limits: EventLimits | None = None,
    ) -> None:
        nu = len(histories.indptr) - 1 if n_users is None else n_users
        ni = _rows(items) if n_items is None else n_items
        super().__init__(release_id, nu, ni, vocabularies, limits)
        for what, arrays, n in (("user", users, self.n_users), ("item", items, self.n_items)):
            for name, arr in arrays.items():
                if arr.shape[0] != n:
                    raise ArtifactError(f"{what} feature {name!r} has {arr.shape[0]} rows, expected {n}")
        if len(histories.indptr) != self.n_users + 1:
            raise ArtifactError(f"histories cover {len(histories.indptr) - 1} users, expected {self.n_users}")
        self._users = {k: _readonly(v) for k, v in users.items()}
        self._items = {k: _readonly(v) for k, v in items.items()}
        self._hist = HistoryArrays(*(_readonly(a) for a in histories))
        #: online events per user, least recently active first: (item, ts, rating) rings
        self._extra: OrderedDict[UserKey, deque[tuple[int, int, float]]] = OrderedDict()
        self._offsets: set[int] = set()  # event-log offsets applied (idempotent appends)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_tables(
        cls,
        release_id: str,
        users: pl.DataFrame,
        items: pl.DataFrame,
        interactions: pl.DataFrame,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        user_columns: Sequence[str] | None = None,
        item_columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> EmbeddedFeatureStore:
        """Build from a users table (dense ``user`` column), an items table (dense ``item`` column)
        and interactions (``user``, ``item``, ``rating``, ``timestamp``) for the histories."""
        nu = n_users if n_users is not None else _extent(users, interactions, "user")
        ni = n_items if n_items is not None else _extent(items, interactions, "item")
        u, uv = encode_table(users, "user", nu, user_columns, exclude)
        i, iv = encode_table(items, "item", ni, item_columns, exclude)
        hist = build_histories(interactions, nu)
        return cls(release_id, u, i, hist, {**uv, **iv}, n_users=nu, n_items=ni)

    @classmethod
    def from_dataset(
        cls,
        release_id: str,
        dataset: Dataset,
        *,
        user_columns: Sequence[str] | None = None,
        item_columns: Sequence[str] | None = None,
        exclude: Sequence[str] = ("external_id",),
    ) -> EmbeddedFeatureStore:
        """Build from a Dataset's users / items tables and interactions (``external_id`` left out:
        the vocabularies map it)."""
        return cls.from_tables(
            release_id,
            dataset.users,
            dataset.items,
            dataset.interactions,
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            user_columns=user_columns,
            item_columns=item_columns,
            exclude=exclude,
        )

    # ------------------------------------------------------------------ contract
    @property
    def user_features(self) -> list[str]:
        return sorted(self._users)

    @property
    def item_features(self) -> list[str]:
        return sorted(self._items)

    def get_users(self, ids: npt.ArrayLike) -> FeatureArrays:
        return _gather(self._users, self._check_ids(ids, self.n_users, "user"))

    def get_items(self, ids: npt.ArrayLike) -> FeatureArrays:
        return _gather(self._items, self._check_ids(ids, self.n_items, "item"))

    def get_history(self, user: UserKey) -> History:
        key = self._check_user_key(user)
        if isinstance(key, int):
            lo, hi = int(self._hist.indptr[key]), int(self._hist.indptr[key + 1])
            base = History(self._hist.items[lo:hi], self._hist.timestamps[lo:hi], self._hist.ratings[lo:hi])
        else:
            base = History.empty()
        with self._lock:
            extra = self._extra.get(key)
            if extra is None:
                return base  # read-only views into the release arrays
            rows = list(extra)
        h = History(
            np.concatenate([base.items, np.fromiter((r[0] for r in rows), np.int64, len(rows))]),
            np.concatenate([base.timestamps, np.fromiter((r[1] for r in rows), np.int64, len(rows))]),
            np.concatenate([base.ratings, np.fromiter((r[2] for r in rows), np.float32, len(rows))]),
        )
        return sort_history(h)

    def _base_length(self, user: UserKey) -> int:
        if isinstance(user, int):
            return int(self._hist.indptr[user + 1] - self._hist.indptr[user])
        return 0

    def _append(self, user: UserKey, item: int, ts: int, rating: float, offset: int | None) -> int:
        with self._lock:
            if offset is not None:
                if offset in self._offsets:  # applied before: nothing changes
                    ring = self._extra.get(user)
                    return self._base_length(user) + (len(ring) if ring is not None else 0)
                self._offsets.add(offset)
            ring = self._extra.get(user)
            if ring is None:
                ring = self._extra[user] = deque(maxlen=self.limits.max_events)
                while len(self._extra) > self.limits.max_users:
                    self._extra.popitem(last=False)  # the least recently active user's events go
            else:
                self._extra.move_to_end(user)
            ring.append((item, ts, rating))
            return self._base_length(user) + len(ring)

    @property
    def online_users(self) -> int:
        """Users holding online events in this process."""
        return len(self._extra)

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        """Write ``store.json`` plus one ``.npy`` per array (appended events are not saved)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for what, arrays in (("user", self._users), ("item", self._items)):
            for name, arr in arrays.items():
                np.save(d / f"{what}__{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        for field in HistoryArrays._fields:
            np.save(d / f"history__{field}.npy", getattr(self._hist, field), allow_pickle=False)
        meta = {
            "format": _FORMAT,
            "release_id": self.release_id,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "user_schema": schema_of(self._users),
            "item_schema": schema_of(self._items),
            "vocabularies": self.vocabularies,
        }
        (d / _META).write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> EmbeddedFeatureStore:
        """Read a directory written by `save`; ``mmap`` maps the arrays instead of reading them."""
        d = Path(directory)
        try:
            meta = json.loads((d / _META).read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{d / _META}: not a saved feature store (store.json missing)") from None
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{d / _META}: malformed JSON: {exc}") from exc
        if meta.get("format") != _FORMAT:
            raise ArtifactError(f"{d / _META}: unsupported store format {meta.get('format')!r}")
        mode: Any = "r" if mmap else None

        def read(name: str) -> npt.NDArray[Any]:
            try:
                arr: npt.NDArray[Any] = np.load(d / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
                return arr
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{d / name}.npy: cannot read: {exc}") from exc

        users = {name: read(f"user__{name}") for name, _, _ in meta["user_schema"]}
        items = {name: read(f"item__{name}") for name, _, _ in meta["item_schema"]}
        hist = HistoryArrays(*(read(f"history__{f}") for f in HistoryArrays._fields))
        return cls(
            meta["release_id"],
            users,
            items,
            hist,
            meta.get("vocabularies") or {},
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
        )

    def arrays(self) -> tuple[FeatureArrays, FeatureArrays, HistoryArrays]:
        """(user features, item features, histories) as read-only arrays (used by the Redis loader)."""
        return dict(self._users), dict(self._items), self._hist


def _extent(table: pl.DataFrame, interactions: pl.DataFrame, col: str) -> int:
    """Number of dense indices: 1 + the largest index in the table or the interactions."""
    top = -1
    for df in (table, interactions):
        if col in df.columns and df.height:
            top = max(top, int(df[col].max()))  # type: ignore[arg-type]
    return top + 1


def _rows(arrays: Mapping[str, npt.NDArray[Any]]) -> int:
    return next(iter(arrays.values())).shape[0] if arrays else 0


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    v = a.view()
    v.flags.writeable = False
    return v


def _gather(arrays: Mapping[str, npt.NDArray[Any]], ids: npt.NDArray[np.int64]) -> FeatureArrays:
    n = len(ids)
    if n and int(ids[-1]) - int(ids[0]) == n - 1 and (n == 1 or bool(np.all(np.diff(ids) == 1))):
        lo = int(ids[0])
        return {k: v[lo : lo + n] for k, v in arrays.items()}  # read-only views, no copy
    return {k: np.take(v, ids, axis=0) for k, v in arrays.items()}
