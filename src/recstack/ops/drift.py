"""Distribution drift: the population stability index (PSI) of live traffic (or of a new data set)
against the training data, on three features.

===================  =========================================================================
feature              bins (of the events' users / items)
===================  =========================================================================
``user_activity``    the user's rank by training activity: the most active 1%, 1-5%, 5-10%,
                     10-20%, 20-35%, 35-50%, 50-75%, the rest; plus users the training data
                     does not know
``item_popularity``  the same by item popularity, plus unknown items
``genre_mix``        the share of each genre among the items (an item of g genres counts 1/g)
===================  =========================================================================

``PSI = sum_i (q_i - p_i) ln(q_i / p_i)`` over the bins, with reference shares ``p`` and live shares
``q`` (both floored at 1e-4). Rule of thumb (Siddiqi, *Credit Risk Scorecards*): < 0.1 no shift,
0.1-0.25 moderate, > 0.25 a major shift; `DEFAULT_THRESHOLD` is 0.25.

**The reference is not the whole training data** but what live traffic looks like right after a
data cut: the last ``recent_fraction`` (10%) of the training interactions by time, binned against
the training data before them (`DriftReference.from_dataset`). Right after any cut some users and
items are new and recent items are less popular than old ones; comparing live traffic with all of
training would flag that every time. Live observations are binned against the whole training data
(quantile bins: the scale difference cancels).

Two users: the server (`DriftMonitor`: a window of the last N events of the event log, every
worker sees every worker's events; gauges ``recstack_drift_psi{feature}``) and the data checks of
`recstack build` (`profile_shift`: a new data set against its parent release's).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_THRESHOLD",
    "FEATURES",
    "Basis",
    "DriftMonitor",
    "DriftReference",
    "profile_shift",
    "psi",
]

FEATURES: tuple[str, ...] = ("user_activity", "item_popularity", "genre_mix")
DEFAULT_THRESHOLD = 0.25
_FLOOR = 1e-4

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def psi(reference: npt.ArrayLike, live: npt.ArrayLike) -> float:
    """The population stability index of two histograms (counts or shares over the same bins)."""
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(live, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in bins: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p = np.maximum(p / p.sum(), _FLOOR)
    q = np.maximum(q / q.sum(), _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


#: upper edges of the rank bins (share of users / items ranked above): the most active 1%, 1-5%...
RANK_EDGES = np.array([0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75])
_UNKNOWN = len(RANK_EDGES) + 1  # the bin of users / items the basis does not know


def _rank_bins(counts: FloatArray) -> IntArray:
    """Per entity, its bin by rank of ``counts`` (most first; ties by index): bin j holds the
    entities whose rank share falls below ``RANK_EDGES[j]``; entities with count 0: `_UNKNOWN`.
    Ranks rather than count or mass quantiles: one very popular item (or very active user) cannot
    empty a bin, and bins mean the same on a basis of 90% or 100% of the data."""
    n = len(counts)
    active = int(np.count_nonzero(counts))
    order = np.lexsort((np.arange(n), -counts))
    share = np.arange(n) / max(active, 1)
    bins = np.searchsorted(RANK_EDGES, share, side="right").astype(np.int64)
    bins[active:] = _UNKNOWN
    out = np.empty(n, dtype=np.int64)
    out[order] = bins
    return out


@dataclass
class Basis:
    """How to bin observations against one interaction table: per user and per item index its rank
    bin (`_rank_bins`: `_UNKNOWN` for users / items without interactions), genre codes per item."""

    user_bin: IntArray  #: [n_users]
    item_bin: IntArray  #: [n_items]
    genres: list[tuple[int, ...]]  #: per item index, genre codes
    n_genres: int

    @classmethod
    def of(
        cls,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        n_users: int,
        n_items: int,
        genres: Sequence[Sequence[int]],
        n_genres: int,
    ) -> Basis:
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        activity = np.bincount(u, minlength=n_users).astype(np.float64)
        pop = np.bincount(i, minlength=n_items).astype(np.float64)
        return cls(_rank_bins(activity), _rank_bins(pop), [tuple(g) for g in genres], n_genres)

    # ---------------------------------------------------------------- binning
    def user_bins(self, users: npt.ArrayLike) -> IntArray:
        """Per observation: the user's activity bin (`_UNKNOWN` for an unknown user: index -1)."""
        u = np.asarray(users, dtype=np.int64)
        known = (u >= 0) & (u < len(self.user_bin))
        out = np.full(len(u), _UNKNOWN, dtype=np.int64)
        out[known] = self.user_bin[u[known]]
        return out

    def item_bins(self, items: npt.ArrayLike) -> IntArray:
        """Per observation: the item's popularity bin (`_UNKNOWN` for an unknown item: index -1)."""
        i = np.asarray(items, dtype=np.int64)
        known = (i >= 0) & (i < len(self.item_bin))
        out = np.full(len(i), _UNKNOWN, dtype=np.int64)
        out[known] = self.item_bin[i[known]]
        return out

    def genre_hist(self, items: npt.ArrayLike) -> FloatArray:
        """Genre shares of the known items among ``items`` (1/g per genre of a g-genre item)."""
        h = np.zeros(max(self.n_genres, 1), dtype=np.float64)
        for i in np.asarray(items, dtype=np.int64).tolist():
            if 0 <= i < len(self.genres) and self.genres[i]:
                w = 1.0 / len(self.genres[i])
                for g in self.genres[i]:
                    h[g] += w
        return h

    def histograms(self, users: npt.ArrayLike, items: npt.ArrayLike) -> dict[str, FloatArray]:
        """The three feature histograms of observations (user index, item index; -1 = unknown)."""
        return {
            "user_activity": np.bincount(self.user_bins(users), minlength=_UNKNOWN + 1).astype(np.float64),
            "item_popularity": np.bincount(self.item_bins(items), minlength=_UNKNOWN + 1).astype(np.float64),
            "genre_mix": self.genre_hist(items),
        }


def _genre_codes(dataset: Any) -> tuple[list[tuple[int, ...]], list[str]]:
    lists = dataset.item_genres()
    names = sorted({g for gs in lists for g in gs})
    pos = {g: j for j, g in enumerate(names)}
    return [tuple(pos[g] for g in gs) for gs in lists], names


@dataclass
class DriftReference:
    """Reference histograms (`FEATURES`) and the basis that bins live observations."""

    reference: dict[str, FloatArray]
    live_basis: Basis
    genre_names: list[str]
    recent_fraction: float

    @classmethod
    def from_dataset(cls, dataset: Any, recent_fraction: float = 0.1) -> DriftReference:
        """The reference of a training `Dataset` (see the module docstring)."""
        inter = dataset.interactions
        u = inter["user"].to_numpy().astype(np.int64)
        i = inter["item"].to_numpy().astype(np.int64)
        ts = inter["timestamp"].to_numpy()
        codes, names = _genre_codes(dataset)
        n_u, n_i = dataset.n_users, dataset.n_items
        live_basis = Basis.of(u, i, n_u, n_i, codes, len(names))
        order = np.argsort(ts, kind="stable")
        n_recent = max(1, round(recent_fraction * len(order))) if len(order) > 1 else 0
        if n_recent == 0 or n_recent >= len(order):
            ref = live_basis.histograms(u, i)
        else:
            old, new = order[: len(order) - n_recent], order[len(order) - n_recent :]
            base = Basis.of(u[old], i[old], n_u, n_i, codes, len(names))
            # users / items absent from the older part are new at the cut (bin 10 via activity 0 /
            # the unknown item bin)
            seen_items = np.bincount(i[old], minlength=n_i) > 0
            items_new = np.where(seen_items[i[new]], i[new], -1)
            ref = base.histograms(u[new], items_new)
            ref["genre_mix"] = base.genre_hist(i[new])
        return cls(ref, live_basis, names, recent_fraction)

    def scores(self, users: npt.ArrayLike, items: npt.ArrayLike) -> dict[str, float]:
        """PSI per feature of live observations (users and items: indices, -1 = unknown; an item of
        -2 means the observation has no item, e.g. a request: it counts for user activity only)."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        has_item = i != -2
        live = {
            "user_activity": np.bincount(self.live_basis.user_bins(u), minlength=_UNKNOWN + 1).astype(
                np.float64
            ),
            "item_popularity": np.bincount(
                self.live_basis.item_bins(i[has_item]), minlength=_UNKNOWN + 1
            ).astype(np.float64),
            "genre_mix": self.live_basis.genre_hist(i[has_item]),
        }
        return {f: psi(self.reference[f], live[f]) for f in FEATURES}


@dataclass
class DriftMonitor:
    """A sliding window of the last ``window`` live observations and their PSI against a reference.

    ``observe(user_idx, item_idx)`` is called for every event (and, with item -2, every request) the
    event log holds; `scores` is NaN per feature until ``min_events`` observations are in."""

    reference: DriftReference
    window: int = 5000
    min_events: int = 200
    threshold: float = DEFAULT_THRESHOLD
    _obs: deque[tuple[int, int]] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, user_idx: int | None, item_idx: int | None) -> None:
        with self._lock:
            self._obs.append(
                (-1 if user_idx is None else int(user_idx), -1 if item_idx is None else int(item_idx))
            )
            while len(self._obs) > self.window:
                self._obs.popleft()

    def observe_many(self, pairs: Iterable[tuple[int | None, int | None]]) -> None:
        for u, i in pairs:
            self.observe(u, i)

    def __len__(self) -> int:
        return len(self._obs)

    def scores(self) -> dict[str, float]:
        with self._lock:
            obs = list(self._obs)
        if len(obs) < self.min_events:
            return dict.fromkeys(FEATURES, math.nan)
        arr = np.asarray(obs, dtype=np.int64)
        return self.reference.scores(arr[:, 0], arr[:, 1])

    def status(self) -> dict[str, Any]:
        sc = self.scores()
        return {
            "window_events": len(self._obs),
            "window": self.window,
            "min_events": self.min_events,
            "threshold": self.threshold,
            "psi": sc,
            "drifted": sorted(f for f, v in sc.items() if math.isfinite(v) and v > self.threshold),
        }


def profile_shift(parent: Any, child: Any) -> dict[str, float]:
    """PSI per feature (and ``rating``: the rating distribution) of a data set ``child`` against
    ``parent`` (both `Dataset`): ``child``'s interactions binned against ``parent``'s (ids mapped by
    their external values; ids ``parent`` lacks fall in the unknown bins)."""
    pu, pi = parent.interactions["user"].to_numpy(), parent.interactions["item"].to_numpy()
    codes, names = _genre_codes(parent)
    basis = Basis.of(pu, pi, parent.n_users, parent.n_items, codes, len(names))
    ref = basis.histograms(pu, pi)
    cu = _map_ids(child.user_vocab, parent.user_vocab, child.interactions["user"].to_numpy())
    ci = _map_ids(child.item_vocab, parent.item_vocab, child.interactions["item"].to_numpy())
    live = basis.histograms(cu, ci)
    # genres of child items that the parent does not know: from the child's own item table
    c_codes, c_names = _genre_codes(child)
    pos = {g: j for j, g in enumerate(names)}
    unknown = ci < 0
    if unknown.any():
        ci_raw = child.interactions["item"].to_numpy()[unknown]
        for i in ci_raw.tolist():
            gs = [pos[c_names[g]] for g in c_codes[i] if c_names[g] in pos]
            for g in gs:
                live["genre_mix"][g] += 1.0 / len(gs)
    out = {f: psi(ref[f], live[f]) for f in FEATURES}
    edges = np.arange(0.0, 10.5, 0.5)
    pr = np.histogram(parent.interactions["rating"].to_numpy(), bins=edges)[0]
    cr = np.histogram(child.interactions["rating"].to_numpy(), bins=edges)[0]
    out["rating"] = psi(pr, cr)
    return out


def _map_ids(src_vocab: Any, dst_vocab: Any, idx: npt.NDArray[Any]) -> IntArray:
    """Indices of ``src_vocab`` -> indices of ``dst_vocab`` (-1 where ``dst_vocab`` lacks the id)."""
    ids = src_vocab.ids.to_list()
    table = np.array([-1 if (j := dst_vocab.get(x)) is None else int(j) for x in ids], dtype=np.int64)
    return table[np.asarray(idx, dtype=np.int64)] if len(table) else np.zeros(0, np.int64)


def describe(scores: Mapping[str, float], threshold: float = DEFAULT_THRESHOLD) -> str:
    """``user_activity 0.031, item_popularity 0.412 (over 0.25), ...``"""
    parts = []
    for f, v in scores.items():
        mark = f" (over {threshold:.2g})" if math.isfinite(v) and v > threshold else ""
        parts.append(f"{f} {v:.3f}{mark}" if math.isfinite(v) else f"{f} –")
    return ", ".join(parts)
