"""Offline metrics, vectorised over sparse matrices.

Ranking metrics take the top-K recommendations ``ids[n, K]`` (int, padded with -1) and the test truth as
a sparse matrix ``truth[n, n_items]`` whose nonzero entries are the relevant items of each row (row r of
``truth`` belongs to row r of ``ids``). Every metric is computed for a whole list of cut-offs at once from
one boolean hits matrix ``[n, max(ks)]`` and its cumulative sums. Only rows with at least one relevant
item count (users without test items are dropped), as in Microsoft Recommenders.

Definitions (binary relevance; ``hits@k`` = relevant items among the first k, ``|rel|`` = number of
relevant items of the user), those of the Microsoft Recommenders python evaluation module
(recommenders-team/recommenders, ``recommenders/evaluation/python_evaluation.py``):

- ``precision@k = hits@k / k`` (``precision_at_k``: ``df_hit_count["hit"] / k``);
- ``recall@k = hits@k / |rel|`` (``recall_at_k``: ``hit / actual``);
- ``ndcg@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{hit ranks r <= k} 1 / log(1 + r)`` and IDCG the DCG
  of a perfect list of ``min(k, |rel|)`` hits (``ndcg_at_k`` with ``score_type="binary"``; the log base
  cancels in the ratio, we use log2);
- ``map@k = sum_{hit ranks r <= k} precision@r / min(k, |rel|)``: ``map_at_k`` sums the reciprocal
  ranks ``rr = (hit number) / rank`` of the hits and divides by ``actual.apply(lambda x: min(x, k))``
  (it follows Spark MLlib's ``meanAveragePrecisionAt``); ``map`` without ``@k`` divides by ``|rel|``;
- ``hr@k = 1 if hits@k > 0 else 0`` (hit rate); ``mrr@k = 1 / (rank of the first hit)`` if that rank is
  ``<= k`` else 0.

Beyond accuracy: catalog coverage@k, novelty@k (mean self-information ``-log2(pop / n_users)`` of the
recommended items), intra-list genre diversity@k (mean pairwise Jaccard distance of genre sets), AUC
and logloss of scored pairs, and TensorFlow Recommenders' FactorizedTopK top-K categorical accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.stats import rankdata

from recstack.errors import InvalidArgumentError

__all__ = [
    "RANKING_METRICS",
    "RankingResult",
    "auc",
    "catalog_coverage",
    "factorized_topk_accuracy",
    "genre_matrix",
    "hits_matrix",
    "intra_list_diversity",
    "logloss",
    "novelty",
    "paired_bootstrap_ci",
    "popularity_bins",
    "ranking_metrics",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: names of the per-user ranking metrics computed by `ranking_metrics`
RANKING_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "hr", "mrr")


def _check_ks(ks: Iterable[int], width: int) -> tuple[int, ...]:
    out = tuple(sorted({int(k) for k in ks}))
    if not out:
        raise InvalidArgumentError("ks must name at least one cut-off, for example ks=[10]")
    if out[0] < 1:
        raise InvalidArgumentError(f"every k must be >= 1, got {out[0]}")
    if out[-1] > width:
        raise InvalidArgumentError(
            f"k={out[-1]} is larger than the {width} recommendations per user; recommend at least max(ks)"
        )
    return out


def hits_matrix(ids: npt.ArrayLike, truth: sp.spmatrix | sp.sparray) -> BoolArray:
    """Boolean [n, K]: ``hits[r, j]`` is True when ``ids[r, j]`` is a relevant item of row r.

    ``ids`` [n, K] int (-1 = padding, never a hit); ``truth`` [n, n_items] sparse, nonzero = relevant.
    Vectorised: (row, item) pairs are encoded as ``row * n_items + item`` and looked up with `np.isin`.
    """
    rec = np.asarray(ids, dtype=np.int64)
    if rec.ndim != 2:
        raise InvalidArgumentError(f"ids must be 2-D [n, K], got shape {rec.shape}")
    t = sp.csr_matrix(truth)
    t.eliminate_zeros()
    n, n_items = t.shape
    if rec.shape[0] != n:
        raise InvalidArgumentError(f"ids has {rec.shape[0]} rows but truth has {n}; they must be aligned")
    if rec.size and rec.max() >= n_items:
        raise InvalidArgumentError(f"ids contain item {int(rec.max())} >= n_items={n_items}")
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(t.indptr))
    truth_keys = rows * n_items + t.indices.astype(np.int64)
    rec_keys = np.arange(n, dtype=np.int64)[:, None] * n_items + rec
    hits = np.isin(rec_keys, truth_keys)
    hits &= rec >= 0
    return hits


@dataclass(frozen=True)
class RankingResult:
    """Per-user ranking metrics for several cut-offs.

    ``per_user[name]`` is float64 [n_eval, len(ks)] for each name in `RANKING_METRICS`; ``rows`` are the
    row indices (into the ``ids`` / ``truth`` passed in) of the evaluated users, those with at least one
    relevant item.
    """

    ks: tuple[int, ...]
    rows: IntArray
    per_user: dict[str, FloatArray] = field(repr=False)

    @property
    def n_users(self) -> int:
        return int(self.rows.shape[0])

    def column(self, k: int) -> int:
        try:
            return self.ks.index(k)
        except ValueError:
            raise InvalidArgumentError(f"k={k} was not computed; ks are {list(self.ks)}") from None

    def mean(self, name: str, k: int) -> float:
        """Mean over evaluated users of metric ``name`` at cut-off ``k`` (0.0 when no user counts)."""
        if name not in self.per_user:
            raise InvalidArgumentError(f"unknown metric {name!r}; choose from {', '.join(RANKING_METRICS)}")
        if self.n_users == 0:
            return 0.0
        return float(self.per_user[name][:, self.column(k)].mean())

    def curve(self, name: str) -> list[float]:
        """Means of metric ``name`` for every k in ``ks`` (same order)."""
        return [self.mean(name, k) for k in self.ks]

    def means(self, ks: Sequence[int] | None = None) -> dict[str, float]:
        """``{"precision@10": x, ...}`` for every metric and every k in ``ks`` (default: all)."""
        return {f"{m}@{k}": self.mean(m, k) for k in (ks or self.ks) for m in RANKING_METRICS}


def ranking_metrics(ids: npt.ArrayLike, truth: sp.spmatrix | sp.sparray, ks: Iterable[int]) -> RankingResult:
    """Precision, recall, NDCG, MAP, HR and MRR @k for every k in ``ks`` (see the module docstring).

    ``ids`` [n, K] int, -1 padded, best first, K >= max(ks); ``truth`` [n, n_items] sparse. Rows of
    ``truth`` without any nonzero entry are left out.
    """
    rec = np.asarray(ids, dtype=np.int64)
    t = sp.csr_matrix(truth)
    t.eliminate_zeros()
    ks_t = _check_ks(ks, rec.shape[1] if rec.ndim == 2 else 0)
    kmax = ks_t[-1]
    n_rel_all = np.diff(t.indptr).astype(np.int64)
    rows = np.flatnonzero(n_rel_all > 0).astype(np.int64)
    hits = hits_matrix(rec[rows, :kmax], t[rows]).astype(np.float64)  # [n, kmax]
    n_rel = n_rel_all[rows].astype(np.float64)[:, None]  # [n, 1]
    ranks = np.arange(1, kmax + 1, dtype=np.float64)  # [kmax]
    kk = np.asarray(ks_t, dtype=np.int64)
    cols = kk - 1

    cum_hits = np.cumsum(hits, axis=1)  # hits@r for r = 1..kmax
    disc = 1.0 / np.log2(ranks + 1.0)
    dcg = np.cumsum(hits * disc, axis=1)
    ideal = np.cumsum(disc)  # IDCG of m hits = ideal[m - 1]
    # precision at each hit rank (hit number / rank), summed up to rank k
    ap_sum = np.cumsum(hits * cum_hits / ranks, axis=1)
    # first hit rank (kmax + 1 when none)
    any_hit = hits.any(axis=1)
    first = np.where(any_hit, hits.argmax(axis=1) + 1, kmax + 1).astype(np.float64)[:, None]

    h = cum_hits[:, cols]  # [n, len(ks)]
    denom_k = np.minimum(n_rel, kk[None, :].astype(np.float64))  # min(|rel|, k)
    idcg = ideal[denom_k.astype(np.int64) - 1] if rows.size else np.zeros_like(h)
    per_user: dict[str, FloatArray] = {
        "precision": h / kk[None, :],
        "recall": h / n_rel,
        "ndcg": dcg[:, cols] / idcg,
        "map": ap_sum[:, cols] / denom_k,
        "hr": (h > 0).astype(np.float64),
        "mrr": np.where(first <= kk[None, :], 1.0 / first, 0.0),
    }
    return RankingResult(ks=ks_t, rows=rows, per_user=per_user)


# --------------------------------------------------------------------------------- beyond accuracy
def _first_rank_per_item(ids: IntArray, n_items: int) -> IntArray:
    """Smallest 1-based rank at which each item appears in ``ids`` [n, K]; K + 1 when never."""
    width = ids.shape[1] if ids.ndim == 2 else 0
    first = np.full(n_items, width + 1, dtype=np.int64)
    valid = ids >= 0
    r = np.broadcast_to(np.arange(1, width + 1, dtype=np.int64), ids.shape)
    np.minimum.at(first, ids[valid], r[valid])
    return first


def catalog_coverage(ids: npt.ArrayLike, n_items: int, ks: Iterable[int]) -> dict[int, float]:
    """Catalog coverage@k: distinct items in the top k of any user / n_items, for each k in ``ks``."""
    rec = np.asarray(ids, dtype=np.int64)
    ks_t = _check_ks(ks, rec.shape[1])
    if n_items <= 0:
        raise InvalidArgumentError("n_items must be positive")
    first = _first_rank_per_item(rec, n_items)
    counts = np.bincount(np.minimum(first, rec.shape[1] + 1), minlength=rec.shape[1] + 2)
    cum = np.cumsum(counts)  # cum[k] = items whose first rank <= k
    return {k: float(cum[k] / n_items) for k in ks_t}


def novelty(
    ids: npt.ArrayLike, item_popularity: npt.ArrayLike, n_users: int, ks: Iterable[int]
) -> dict[int, float]:
    """Novelty@k: mean over users of the mean self-information ``-log2(pop_i / n_users)`` (bits) of the
    items in their top k.

    ``item_popularity`` [n_items]: number of training users of each item; items never seen in training
    count as popularity 1 (the most novel possible, finite). Padding (-1) is skipped; users with no
    recommendation at all are left out.
    """
    rec = np.asarray(ids, dtype=np.int64)
    ks_t = _check_ks(ks, rec.shape[1])
    pop = np.maximum(np.asarray(item_popularity, dtype=np.float64), 1.0)
    if n_users <= 0:
        raise InvalidArgumentError("n_users must be positive")
    info = -np.log2(np.minimum(pop / n_users, 1.0))
    valid = rec >= 0
    vals = np.where(valid, info[np.where(valid, rec, 0)], 0.0)
    cum_v = np.cumsum(vals, axis=1)
    cum_n = np.cumsum(valid, axis=1)
    out: dict[int, float] = {}
    for k in ks_t:
        n = cum_n[:, k - 1]
        keep = n > 0
        out[k] = float((cum_v[keep, k - 1] / n[keep]).mean()) if keep.any() else 0.0
    return out


def genre_matrix(genres: Sequence[Sequence[str]]) -> sp.csr_matrix:
    """Multi-hot genre matrix [n_items, n_genres] (float32) from one genre list per item."""
    names = sorted({g for gs in genres for g in gs})
    col = {g: j for j, g in enumerate(names)}
    rows: list[int] = []
    cols: list[int] = []
    for i, gs in enumerate(genres):
        for g in set(gs):
            rows.append(i)
            cols.append(col[g])
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(genres), max(len(names), 1))
    )


def intra_list_diversity(
    ids: npt.ArrayLike,
    genres: sp.spmatrix | sp.sparray | Sequence[Sequence[str]],
    ks: Iterable[int],
    *,
    batch_size: int = 256,
) -> dict[int, float]:
    """Intra-list genre diversity@k: mean over users of the mean pairwise Jaccard distance
    ``1 - |G_a ∩ G_b| / |G_a ∪ G_b|`` between the genre sets of the items in their top k.

    ``genres`` is a multi-hot matrix [n_items, n_genres] or one genre list per item. Two items that both
    have no genre have distance 0. Users with fewer than two recommended items are left out; k = 1
    gives 0.0.
    """
    rec = np.asarray(ids, dtype=np.int64)
    ks_t = _check_ks(ks, rec.shape[1])
    G = genres if sp.issparse(genres) else genre_matrix(genres)
    dense = np.asarray(sp.csr_matrix(G).todense(), dtype=np.float32) > 0  # [n_items, n_genres]
    dense_f = dense.astype(np.float32)
    sizes = dense_f.sum(axis=1)
    kmax = ks_t[-1]
    n = rec.shape[0]
    sums = np.zeros((n, kmax), dtype=np.float64)  # sum of distances among the first k items
    for start in range(0, n, batch_size):
        blk = rec[start : start + batch_size, :kmax]
        valid = blk >= 0
        safe = np.where(valid, blk, 0)
        g = dense_f[safe]  # [b, K, n_genres]
        inter = np.einsum("bkg,bjg->bkj", g, g)
        s = sizes[safe]
        union = s[:, :, None] + s[:, None, :] - inter
        dist = np.where(union > 0, 1.0 - inter / np.maximum(union, 1e-12), 0.0)
        pair_ok = valid[:, :, None] & valid[:, None, :]
        dist = np.where(pair_ok, dist, 0.0)
        upper = np.triu(dist, k=1)  # pairs i < j
        col_sums = upper.sum(axis=1)  # [b, K]: sum over i < j of d(i, j), for each j
        sums[start : start + batch_size] = np.cumsum(col_sums, axis=1)
    n_valid = np.cumsum(rec[:, :kmax] >= 0, axis=1)
    out: dict[int, float] = {}
    for k in ks_t:
        m = n_valid[:, k - 1].astype(np.float64)
        keep = m >= 2
        if k < 2 or not keep.any():
            out[k] = 0.0
            continue
        pairs = m[keep] * (m[keep] - 1) / 2.0
        out[k] = float((sums[keep, k - 1] / pairs).mean())
    return out


def popularity_bins(
    ids: npt.ArrayLike, item_popularity: npt.ArrayLike, k: int, n_bins: int = 20
) -> tuple[list[float], list[float]]:
    """Long-tail profile: items sorted by popularity (most popular first) are cut into ``n_bins``
    equal-size bins. Returns (share of all top-k recommendations falling in each bin, share of the
    catalog's interactions in each bin); both lists sum to 1 (or are all 0)."""
    rec = np.asarray(ids, dtype=np.int64)[:, :k]
    pop = np.asarray(item_popularity, dtype=np.float64)
    n_items = pop.shape[0]
    order = np.argsort(-pop, kind="stable")
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = np.arange(n_items)
    bin_of_rank = (np.arange(n_items) * n_bins) // max(n_items, 1)
    item_bin = bin_of_rank[rank]
    rec_valid = rec[rec >= 0]
    rec_counts = np.bincount(item_bin[rec_valid], minlength=n_bins).astype(np.float64)
    cat_counts = np.bincount(item_bin, weights=pop, minlength=n_bins).astype(np.float64)
    rec_share = rec_counts / rec_counts.sum() if rec_counts.sum() > 0 else rec_counts
    cat_share = cat_counts / cat_counts.sum() if cat_counts.sum() > 0 else cat_counts
    return [float(x) for x in rec_share], [float(x) for x in cat_share]


# -------------------------------------------------------------------------------- scored pairs
def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve of binary ``labels`` [m] (0/1) and ``scores`` [m] (higher = positive).

    The Mann-Whitney statistic with average ranks for ties (equals sklearn's ``roc_auc_score``).
    """
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InvalidArgumentError(f"labels {y.shape} and scores {s.shape} must have the same length")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise InvalidArgumentError("AUC needs at least one positive and one negative label")
    r = rankdata(s)  # average ranks, 1-based
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: npt.ArrayLike, probs: npt.ArrayLike, *, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy (natural log) of ``labels`` [m] (0/1) and probabilities ``probs`` [m],
    clipped to ``[eps, 1 - eps]``."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise InvalidArgumentError(f"labels {y.shape} and probs {p.shape} must have the same length")
    if y.size == 0:
        raise InvalidArgumentError("logloss needs at least one pair")
    if np.any((p < 0) | (p > 1)):
        raise InvalidArgumentError("logloss needs probabilities in [0, 1]; apply a sigmoid to raw scores")
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def factorized_topk_accuracy(
    scores: npt.NDArray[np.floating[Any]],
    rows: npt.ArrayLike,
    items: npt.ArrayLike,
    ks: Iterable[int],
) -> dict[int, FloatArray]:
    """Top-K categorical accuracy of TensorFlow Recommenders' ``FactorizedTopK`` metric, per pair.

    ``scores`` [n, n_items]: the model's scores of ALL items for n users (nothing removed); ``rows`` [m]
    and ``items`` [m] give m test pairs (row into ``scores``, item). Pair j is a hit at K when its item is
    in the user's top K, i.e. fewer than K items score strictly higher (``tf.math.in_top_k`` counts
    ties at the boundary as inside). Returns ``{K: hits[m]}`` (float64 0/1); the metric is the mean over
    pairs, not users.
    """
    sc = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rows, dtype=np.int64).ravel()
    it = np.asarray(items, dtype=np.int64).ravel()
    if r.shape != it.shape:
        raise InvalidArgumentError("rows and items must have the same length")
    ks_t = tuple(sorted({int(k) for k in ks}))
    pos = sc[r, it]
    # rows with equal -inf / nan are not expected; sort each row once and count strictly greater
    n_items = sc.shape[1]
    greater = np.empty(r.shape[0], dtype=np.int64)
    sorted_rows = np.sort(sc, axis=1)
    order = np.argsort(r, kind="stable")
    uniq, starts = np.unique(r[order], return_index=True)
    ends = np.append(starts[1:], r.shape[0])
    for row, a, b in zip(uniq, starts, ends, strict=True):
        sel = order[a:b]
        greater[sel] = n_items - np.searchsorted(sorted_rows[row], pos[sel], side="right")
    return {k: (greater < k).astype(np.float64) for k in ks_t}


def paired_bootstrap_ci(
    diffs: Sequence[npt.ArrayLike],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 42,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of a mean-over-strata of paired differences -> (estimate, low, high).

    ``diffs[s]`` are the per-unit differences (model B minus model A on the same user) of stratum ``s``
    (a ``temporal-rolling`` window); the statistic is the mean over strata of the stratum means (the
    protocol's headline "mean over windows"). Units are resampled with replacement inside each stratum
    (a paired, stratified bootstrap), ``n_resamples`` times with a seeded generator. Empty strata are
    left out; all empty -> (nan, nan, nan).
    """
    parts = [np.asarray(d, dtype=np.float64).ravel() for d in diffs]
    parts = [d for d in parts if d.size]
    if not parts:
        return float("nan"), float("nan"), float("nan")
    if not 0 < confidence < 1:
        raise InvalidArgumentError(f"confidence={confidence} must be in (0, 1), for example 0.95")
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_resamples, dtype=np.float64)
    for d in parts:
        idx = rng.integers(0, d.size, size=(n_resamples, d.size))
        boot += d[idx].mean(axis=1)
    boot /= len(parts)
    estimate = float(np.mean([d.mean() for d in parts]))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return estimate, float(low), float(high)
