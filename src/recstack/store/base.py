"""The `FeatureStore` contract and the encoding of generic feature tables into dense arrays.

Ids are the release's dense indices: users ``0 .. n_users-1``, items ``0 .. n_items-1``.

- ``get_users(ids[n])`` / ``get_items(ids[n])`` -> ``{feature name: array with first dim n}``;
  numeric features are float32 (floats) or int32 (integers, booleans, categorical codes), multi-hot
  features (a ``list[str]`` column such as genres) are float32 ``[n, n_values]``, fixed-length numeric
  lists are float32 ``[n, length]``. An id outside the range raises `UnknownIdError`.
- ``get_history(user)`` -> `History` ``(items int64[m], timestamps int64[m] (Unix s),
  ratings float32[m])``, oldest first / newest last. ``user`` is a dense index, or a string key for
  a user unknown to the release (its history holds only the events appended online).
- ``append_event(user, item, kind, rating=None, ts=None, offset=None) -> int`` appends at once and
  returns the length of the user's history after it; views and clicks without a rating store NaN as
  rating. A rejected event (bad kind, unknown item, a timestamp outside int64 or before 1970) raises
  before anything is stored. With the event's ``offset`` in the event log (`recstack.events`) the
  append is idempotent: an offset already applied to this release's histories changes nothing (a
  worker replaying the log after a restart, or tailing events that another worker already stored in
  a shared store, never doubles a history).
- Online events are bounded (`EventLimits`): at most ``max_events`` per user (the oldest go) and
  ``max_users`` distinct users holding online events (the least recently active user's events go
  first); the Redis store also expires a user's online events ``ttl_seconds`` after the last one.

Tables (`encode_table`): a polars DataFrame with a dense index column (``user`` / ``item``) and
feature columns. Nulls become 0 (codes: -1, multi-hot: no value); string columns become int32 codes
into a sorted vocabulary (``vocabularies[name]``), ``list[str]`` columns multi-hot over one.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack.errors import InvalidArgumentError, UnknownIdError

__all__ = [
    "EventKind",
    "EventLimits",
    "FeatureArrays",
    "FeatureStore",
    "History",
    "HistoryArrays",
    "UserKey",
    "build_histories",
    "check_release_id",
    "encode_table",
    "schema_of",
]

EventKind = Literal["view", "click", "rating"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
UserKey = int | str
FeatureArrays = dict[str, npt.NDArray[Any]]
_INT64_MAX = 2**63 - 1
_RELEASE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class EventLimits:
    """Bounds on the events a store keeps beyond the release's own histories."""

    #: distinct users with online events held; past it the least recently active user's events go
    max_users: int = 100_000
    #: online events kept per user (the oldest go first)
    max_events: int = 1_000
    #: Redis: a user's online events expire this long after their last event (seconds)
    ttl_seconds: int = 30 * 86_400

    def __post_init__(self) -> None:
        if self.max_users < 1 or self.max_events < 1 or self.ttl_seconds < 1:
            raise InvalidArgumentError(f"event limits must be >= 1, got {self}")


class History(NamedTuple):
    """One user's events, oldest first: ``items`` int64[m], ``timestamps`` int64[m] (Unix seconds),
    ``ratings`` float32[m] (NaN for views / clicks without a rating)."""

    items: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float32]

    @classmethod
    def empty(cls) -> History:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))


class HistoryArrays(NamedTuple):
    """Every user's history in CSR layout: user ``u`` owns rows ``indptr[u]:indptr[u+1]``, sorted by
    timestamp (stable). ``items`` int64, ``timestamps`` int64, ``ratings`` float32."""

    indptr: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float32]


def check_release_id(release_id: str) -> str:
    if not isinstance(release_id, str) or not _RELEASE_RE.match(release_id):
        raise InvalidArgumentError(
            f"release id {release_id!r} must be 1-128 characters of letters, digits, '.', '_' or '-'"
        )
    return release_id


def schema_of(arrays: Mapping[str, npt.NDArray[Any]]) -> list[tuple[str, str, list[int]]]:
    """``[(name, dtype str, per-row shape)]`` of feature arrays, in name order."""
    return [(k, arrays[k].dtype.str, list(arrays[k].shape[1:])) for k in sorted(arrays)]


# ---------------------------------------------------------------------------------- encoding


def encode_table(
    df: pl.DataFrame,
    index_col: str,
    n: int | None = None,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> tuple[FeatureArrays, dict[str, list[str]]]:
    """Dense feature arrays ``{name: array[n, ...]}`` and vocabularies from a feature table.

    ``df[index_col]`` holds dense indices in ``[0, n)`` (``n`` defaults to max + 1); rows missing from
    the table get zeros (codes -1). ``columns`` selects features (default: every other column minus
    ``exclude``).
    """
    if index_col not in df.columns:
        raise InvalidArgumentError(
            f"feature table needs a dense index column {index_col!r}; has {df.columns}"
        )
    idx = df[index_col].to_numpy().astype(np.int64, copy=False)
    if len(idx) and idx.min() < 0:
        raise InvalidArgumentError(f"column {index_col!r} has negative indices; expected dense indices >= 0")
    if len(np.unique(idx)) != len(idx):
        raise InvalidArgumentError(f"column {index_col!r} has duplicate indices; one row per {index_col}")
    size = int(idx.max()) + 1 if len(idx) else 0
    if n is None:
        n = size
    elif size > n:
        raise InvalidArgumentError(f"column {index_col!r} has index {size - 1} >= n={n}")
    cols = [c for c in (columns or df.columns) if c != index_col and c not in exclude]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidArgumentError(f"feature columns {missing} not in the table (has {df.columns})")
    arrays: FeatureArrays = {}
    vocabs: dict[str, list[str]] = {}
    for c in cols:
        arr, vocab = _encode_column(df[c], c)
        full = np.full((n, *arr.shape[1:]), -1 if vocab is not None and arr.ndim == 1 else 0, arr.dtype)
        full[idx] = arr
        arrays[c] = full
        if vocab is not None:
            vocabs[c] = vocab
    return arrays, vocabs


def _encode_column(s: pl.Series, name: str) -> tuple[npt.NDArray[Any], list[str] | None]:
    dt = s.dtype
    if dt.is_float():
        return s.fill_null(0).to_numpy().astype(np.float32), None
    if dt.is_integer() or dt == pl.Boolean:
        vals = s.fill_null(0).cast(pl.Int64).to_numpy()
        if len(vals) and (vals.min() < np.iinfo(np.int32).min or vals.max() > np.iinfo(np.int32).max):
            raise InvalidArgumentError(f"feature {name!r} does not fit int32; cast it to float or exclude it")
        return vals.astype(np.int32), None
    if dt in (pl.String, pl.Categorical) or isinstance(dt, pl.Enum):
        strs = s.cast(pl.String)
        vocab = sorted(v for v in strs.unique().to_list() if v is not None)
        pos = {v: i for i, v in enumerate(vocab)}
        codes = np.fromiter(
            (pos.get(v, -1) if v is not None else -1 for v in strs.to_list()), np.int32, len(s)
        )
        return codes, vocab
    if isinstance(dt, (pl.List, pl.Array)):
        inner = dt.inner
        assert inner is not None
        if inner in (pl.String, pl.Categorical):
            lists = [list(v) if v is not None else [] for v in s.cast(pl.List(pl.String)).to_list()]
            vocab = sorted({v for row in lists for v in row if v is not None})
            pos = {v: i for i, v in enumerate(vocab)}
            hot = np.zeros((len(s), len(vocab)), dtype=np.float32)
            for r, row in enumerate(lists):
                for v in row:
                    if v is not None:
                        hot[r, pos[v]] = 1.0
            return hot, vocab
        if inner.is_numeric():
            lists = [v for v in s.to_list() if v is not None]
            lengths = {len(v) for v in lists}
            if len(lengths) > 1:
                raise InvalidArgumentError(
                    f"feature {name!r}: numeric lists must all have the same length, found {sorted(lengths)}"
                )
            width = lengths.pop() if lengths else 0
            out = np.zeros((len(s), width), dtype=np.float32)
            for r, v in enumerate(s.to_list()):
                if v is not None:
                    out[r] = np.asarray(v, dtype=np.float32)
            return out, None
    raise InvalidArgumentError(
        f"feature {name!r} has unsupported type {dt}; use numeric, boolean, string or list columns "
        "(or leave it out with columns= / exclude=)"
    )


def build_histories(interactions: pl.DataFrame, n_users: int) -> HistoryArrays:
    """CSR histories from interactions (``user``, ``item``, ``rating``, ``timestamp`` columns)."""
    for c in ("user", "item", "timestamp"):
        if c not in interactions.columns:
            raise InvalidArgumentError(f"interactions need a {c!r} column; has {interactions.columns}")
    users = interactions["user"].to_numpy().astype(np.int64)
    if len(users) and (users.min() < 0 or users.max() >= n_users):
        raise InvalidArgumentError(f"interactions reference users outside [0, {n_users})")
    ts = interactions["timestamp"].to_numpy().astype(np.int64)
    items = interactions["item"].to_numpy().astype(np.int64)
    # by user, timestamp, then item: the order of the serving catalog's histories, so that a user's
    # recent items (and so its recommendations) do not depend on where the history is read from
    order = np.lexsort((items, ts, users))
    items = items[order]
    if "rating" in interactions.columns:
        ratings = interactions["rating"].fill_null(float("nan")).to_numpy().astype(np.float32)[order]
    else:
        ratings = np.full(len(order), np.nan, dtype=np.float32)
    counts = np.bincount(users, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return HistoryArrays(indptr, items, ts[order], ratings)


# ---------------------------------------------------------------------------------- contract


class FeatureStore(ABC):
    """Batched feature reads and per-user histories for one release (see the module docstring)."""

    def __init__(
        self,
        release_id: str,
        n_users: int,
        n_items: int,
        vocabularies: Mapping[str, list[str]] | None = None,
        limits: EventLimits | None = None,
    ) -> None:
        self._release_id = check_release_id(release_id)
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.vocabularies: dict[str, list[str]] = dict(vocabularies or {})
        self.limits = limits or EventLimits()
        self._lock = threading.Lock()

    @property
    def release_id(self) -> str:
        """The release whose features and histories this store serves."""
        return self._release_id

    @property
    @abstractmethod
    def user_features(self) -> list[str]:
        """Names of the user features."""

    @property
    @abstractmethod
    def item_features(self) -> list[str]:
        """Names of the item features."""

    @abstractmethod
    def get_users(self, ids: npt.ArrayLike) -> FeatureArrays:
        """User features of dense user indices ``ids[n]`` -> ``{name: array[n, ...]}``."""

    @abstractmethod
    def get_items(self, ids: npt.ArrayLike) -> FeatureArrays:
        """Item features of dense item indices ``ids[n]`` -> ``{name: array[n, ...]}``."""

    @abstractmethod
    def get_history(self, user: UserKey) -> History:
        """The user's events, newest last."""

    @abstractmethod
    def _append(self, user: UserKey, item: int, ts: int, rating: float, offset: int | None) -> int:
        """Store one validated event (all or nothing) unless ``offset`` was applied already; returns
        the user's history length after it."""

    def append_event(
        self,
        user: UserKey,
        item: int,
        kind: str,
        rating: float | None = None,
        ts: int | None = None,
        offset: int | None = None,
    ) -> int:
        """Append one event to the user's history; visible to the next `get_history` at once.
        Returns the length of the user's history after it (release history + online events).

        ``kind`` is ``view``, ``click`` or ``rating`` (which needs ``rating``); ``ts`` is Unix seconds
        (default: now), 0 .. 2**63 - 1; ``offset``: the event's offset in the event log, applied at
        most once (a second time changes nothing).
        """
        if kind not in EVENT_KINDS:
            raise InvalidArgumentError(f"event kind {kind!r} is not one of {', '.join(EVENT_KINDS)}")
        if kind == "rating" and rating is None:
            raise InvalidArgumentError("a 'rating' event needs rating=<number>")
        r = float("nan") if rating is None else float(rating)
        if rating is not None and not np.isfinite(r):
            raise InvalidArgumentError(f"rating must be a finite number, got {rating!r}")
        key = self._check_user_key(user)
        item_i = self._check_ids(np.asarray([item]), self.n_items, "item")[0]
        stamp = int(time.time()) if ts is None else int(ts)
        if not 0 <= stamp <= _INT64_MAX:
            raise InvalidArgumentError(f"timestamp {ts!r} must be Unix seconds between 0 and 2**63 - 1")
        return self._append(key, int(item_i), stamp, r, None if offset is None else int(offset))

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for in-process stores
        """Release connections (no-op for the embedded store)."""

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_ids(ids: npt.ArrayLike, n: int, what: str) -> npt.NDArray[np.int64]:
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr[None]
        if arr.ndim != 1:
            raise InvalidArgumentError(f"{what} ids must be a 1-d array, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"{what} ids must be integer dense indices, got dtype {arr.dtype}")
        out = arr.astype(np.int64, copy=False)
        if out.size:
            bad = out[(out < 0) | (out >= n)]
            if bad.size:
                raise UnknownIdError(
                    f"unknown {what} index {int(bad[0])} (valid: 0..{n - 1}); "
                    f"{bad.size} of {out.size} ids are out of range"
                )
        return out

    def _check_user_key(self, user: UserKey) -> UserKey:
        if isinstance(user, str):
            if not user:
                raise InvalidArgumentError("user key must be a non-empty string or a dense user index")
            return user
        if isinstance(user, (int, np.integer)) and not isinstance(user, bool):
            if 0 <= user < self.n_users:  # the hot path: no array for one valid index
                return int(user)
            return int(self._check_ids(np.asarray([user]), self.n_users, "user")[0])
        raise InvalidArgumentError(f"user must be a dense index (int) or a string key, got {user!r}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(release={self.release_id!r}, users={self.n_users}, items={self.n_items})"
        )


def sort_history(h: History) -> History:
    """Stable sort by timestamp when appended events arrived out of order."""
    if len(h.timestamps) > 1 and np.any(np.diff(h.timestamps) < 0):
        order = np.argsort(h.timestamps, kind="stable")
        return History(h.items[order], h.timestamps[order], h.ratings[order])
    return h
