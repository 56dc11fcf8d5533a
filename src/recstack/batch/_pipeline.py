"""The online `Pipeline` run as batched matrix work over many profiles at once.

`BatchScorer` wraps the very `Pipeline` object that serving builds (`recstack.serving._state.build_state`)
and reuses its parts: its configuration (sources, quotas, weights, filters, rank / rerank settings),
its retrievers (``Retriever.recommend_history`` on a block of history rows instead of one row), its
`Catalog` (histories, popularity order, genre matrix), its trending scores, ANN index and user tower
(queried with a [B, d] matrix), and its ONNX rankers (the ranker's own input builder per profile, one
ONNX Runtime call per block). The stages are the pipeline's, applied to a [B, n_items] score matrix:

recall (every active source, top ``quota`` per profile) -> merge (per-source min-max normalisation
times weight, summed in float64 in source order, as ``Pipeline._merge``) -> filter (exclude seen)
-> popular fill when fewer than k candidates -> top ``rank.candidates`` -> rank (ranker or merged
score) -> genre-cap rerank (the same fixed-point iteration as ``Pipeline._genre_cap``, batched) -> top k.

For known users without new events and for liked-item profiles this gives the same items, in the same
order, as ``Pipeline.recommend`` (tests/unit/batch/test_batch_pipeline.py checks it user by user).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recstack.errors import InvalidArgumentError
from recstack.models.base import Retriever, order_selected, top_k
from recstack.serving._kernels import SequenceScorer, item_item_kernel
from recstack.serving._ranker import FactorQuery, RankContext
from recstack.serving.pipeline import RECALL_MODEL, Pipeline
from recstack.store.base import build_histories

__all__ = ["BatchScorer", "Profiles"]

_TINY = float(np.nextafter(np.float32(0), np.float32(1)))
_FMAX = float(np.finfo(np.float32).max)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Profiles:
    """A block of B profiles as CSR rows over items.

    ``recent`` [B, n_items]: per row the profile's items, ``data`` = recency rank (1 = most recent)
    so the most-recent-first order can be recovered; ``seen`` [B, n_items]: every item of the profile
    (binary); ``user_idx`` [B]: dense user index, -1 for anonymous (liked-items) profiles.
    """

    recent: sp.csr_matrix
    seen: sp.csr_matrix
    user_idx: IntArray

    @property
    def n(self) -> int:
        return int(self.user_idx.shape[0])


def _low_ramp(m: int) -> FloatArray:
    """``m`` distinct float32 values just above -FLT_MAX (increasing): stand-ins for -inf that keep
    ``np.partition`` fast (long runs of equal values make it several times slower)."""
    bits = np.uint32(0xFF7FFFFF) - np.arange(m, dtype=np.uint32)
    out: FloatArray = bits.view(np.float32)
    return out


_RAMPS: dict[int, FloatArray] = {}


def _ramp(m: int) -> FloatArray:
    r = _RAMPS.get(m)
    if r is None:
        r = _RAMPS[m] = _low_ramp(m)
    return r


def _top_rows(scores: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
    """Row-wise top k of [B, m] -> (ids[B, k], scores[B, k]), best first, ties: lower index first;
    -inf entries come back as id -1 (the contract of `recstack.models.base.top_k`).

    The k-th largest value of every row comes from one in-place ``np.partition`` (values only, -inf
    replaced by distinct stand-ins), the members are ``scores >= kth`` (ties at the cut: the lowest
    indices), and only the k members are sorted. Anything unusual (NaN, scores down at -FLT_MAX)
    goes through `recstack.models.base.top_k`."""
    B, m = scores.shape
    kk = min(k, m)
    if kk < m and B:
        ramp = _ramp(m)
        X = np.where(np.isneginf(scores), ramp, scores)
        X.partition(m - kk, axis=1)
        kth = X[:, m - kk].copy()
        kth[kth <= ramp[-1]] = -np.inf  # fewer than kk finite scores in the row
        mask = kth[:, None] <= scores
        cnt = np.count_nonzero(mask, axis=1)
        tied = np.flatnonzero(cnt > kk)
        if len(tied):  # more than kk values reach the cut: keep the lowest indices among the ties
            sub = scores[tied]
            t = kth[tied][:, None]
            eq = sub == t
            need = kk - np.count_nonzero(sub > t, axis=1)
            mask[tied] = (sub > t) | (eq & (np.cumsum(eq, axis=1) <= need[:, None]))
            cnt[tied] = np.count_nonzero(mask[tied], axis=1)
        if not (cnt == kk).all():
            return top_k(scores, k)
        flat = np.flatnonzero(mask).reshape(B, kk)  # ascending within each row
        part = flat - (np.arange(B, dtype=np.int64) * m)[:, None]
    else:
        part = np.broadcast_to(np.arange(m, dtype=np.int64), (B, m)).copy()
    return order_selected(scores, part, k)


def _kernel(retr: Retriever, n: int) -> tuple[str, Any]:
    """``("dense", W float32 [n, n])``, ``("sparse", S float64 CSR [n, n])`` or ``("generic", None)``:
    `recstack.serving._kernels.item_item_kernel`'s choice, the sparse matrix in float64 for batch sums."""
    kind, m, _ = item_item_kernel(retr, n)
    return kind, (sp.csr_matrix(m, dtype=np.float64) if kind == "sparse" else m)


class BatchScorer:
    """Top k for blocks of known users or liked-item profiles with the pipeline of ``pipeline``.

    Thread-safe (read-only state): the local runner calls it from several threads.
    """

    def __init__(self, pipeline: Pipeline, model: str | None = None) -> None:
        self.pipeline = pipeline
        self.cat = pipeline.catalog
        self.cfg = pipeline.config
        self.model = pipeline.check_model(model)
        self.n_items = self.cat.n_items
        self._indptr, self._items = self._base_histories()
        dedup = sp.csr_matrix(
            (np.ones(len(self._items), np.float32), self._items, self._indptr),
            shape=(len(self._indptr) - 1, self.n_items),
        )
        dedup.sum_duplicates()
        self._dups = dedup.nnz < len(self._items)
        self._weights = {s.name: float(s.weight) for s in self.cfg.sources}
        self._pop_rank = np.empty(self.n_items, dtype=np.int64)
        self._pop_rank[self.cat.pop_order] = np.arange(self.n_items)
        #: per history source: the kernel of `recstack.serving._kernels.history_scorer` in batch form
        self._kernels = {name: _kernel(r, self.n_items) for name, r in pipeline.retrievers.items()}
        self._sparse = {name: bool(sc[1]) for name, sc in pipeline.scorers.items()}
        self._trending_sets: dict[int, IntArray] = {}
        gm = np.asarray(self.cat.genre_matrix) > 0
        self._genre_bits: IntArray | None = (
            (gm.astype(np.int64) << np.arange(gm.shape[1], dtype=np.int64)).sum(axis=1)
            if 0 < gm.shape[1] <= 63
            else None
        )

    # --------------------------------------------------------------- profiles
    def _base_histories(self) -> tuple[IntArray, IntArray]:
        """(indptr, items) of every known user's history, oldest first, from where the pipeline
        reads it: its feature store when that exposes its arrays (the embedded store), the in-process
        arrays of a `MemoryHistory`, else (a Redis store) built from the release's interactions."""
        arrays = getattr(getattr(self.pipeline.history, "store", None), "arrays", None)
        hist = getattr(self.pipeline.history, "base", None)
        if callable(arrays):
            hist = arrays()[2]
        if hist is None or len(hist.indptr) != self.cat.n_users + 1:
            hist = build_histories(self.cat.interactions(), self.cat.n_users)
        return np.asarray(hist.indptr, dtype=np.int64), np.asarray(hist.items, dtype=np.int64)

    def user_profiles(self, user_idx: npt.ArrayLike) -> Profiles:
        """Profiles of known users (dense indices) from the release's histories (ordered by time)."""
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        hp, hi = self._indptr, self._items
        if self._dups:  # rare: repeated (user, item) rows; keep the last occurrence of each item
            rows = [self._dedup_recent(hi[hp[u] : hp[u + 1]]) for u in idx]
            return self._from_lists(rows, idx)
        a, b = hp[idx], hp[idx + 1]
        lens = (b - a).astype(np.int64)
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        pos = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], lens) + np.repeat(a, lens)
        cols = hi[pos]
        # recency rank: the last item of a row (most recent) gets 1
        within = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], lens)
        rank = (np.repeat(lens, lens) - within).astype(np.float32)
        shape = (len(idx), self.n_items)
        recent = sp.csr_matrix((rank, cols, indptr), shape=shape)
        seen = sp.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=shape)
        return Profiles(recent, seen, idx)

    @staticmethod
    def _dedup_recent(items: npt.NDArray[Any]) -> IntArray:
        rev = np.asarray(items, dtype=np.int64)[::-1]
        _, first = np.unique(rev, return_index=True)
        out: IntArray = rev[np.sort(first)]
        return out

    def _from_lists(self, recent_lists: list[IntArray], user_idx: IntArray) -> Profiles:
        lens = np.array([len(r) for r in recent_lists], dtype=np.int64)
        indptr = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        cols = np.concatenate(recent_lists) if recent_lists else np.zeros(0, np.int64)
        rank = np.concatenate([np.arange(1, n + 1, dtype=np.float32) for n in lens]) if len(lens) else cols
        shape = (len(lens), self.n_items)
        recent = sp.csr_matrix((rank.astype(np.float32), cols, indptr), shape=shape)
        seen = sp.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=shape)
        return Profiles(recent, seen, user_idx)

    def pair_profiles(self, a: npt.ArrayLike, b: npt.ArrayLike) -> Profiles:
        """Two-item liked-items profiles ``liked_items=[a, b]`` (b is the most recent), a != b."""
        aa = np.asarray(a, dtype=np.int64).ravel()
        bb = np.asarray(b, dtype=np.int64).ravel()
        n = len(aa)
        cols = np.stack([aa, bb], axis=1).ravel()
        rank = np.tile(np.array([2.0, 1.0], dtype=np.float32), n)
        indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
        shape = (n, self.n_items)
        recent = sp.csr_matrix((rank, cols, indptr), shape=shape)
        seen = sp.csr_matrix((np.ones(2 * n, np.float32), cols, indptr), shape=shape)
        return Profiles(recent, seen, np.full(n, -1, dtype=np.int64))

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _most_recent(recent: sp.csr_matrix, limit: int) -> sp.csr_matrix:
        """Binary rows keeping the ``limit`` most recent items of each row (indices sorted)."""
        keep = recent.data <= limit
        row_of = np.repeat(np.arange(recent.shape[0]), np.diff(recent.indptr))
        lens = np.bincount(row_of[keep], minlength=recent.shape[0]).astype(np.int64)
        indptr = np.zeros(recent.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        out = sp.csr_matrix(
            (np.ones(int(indptr[-1]), np.float32), recent.indices[keep], indptr), shape=recent.shape
        )
        out.sort_indices()
        return out

    @staticmethod
    def _recent_lists(recent: sp.csr_matrix) -> list[IntArray]:
        """Per row: item indices, most recent first."""
        out: list[IntArray] = []
        for r in range(recent.shape[0]):
            a, b = recent.indptr[r], recent.indptr[r + 1]
            cols = recent.indices[a:b].astype(np.int64)
            out.append(cols[np.argsort(recent.data[a:b], kind="stable")])
        return out

    def _recent_matrix(self, recent: sp.csr_matrix, width: int) -> IntArray:
        """[B, width] item index + 1, most recent first, 0 = padding (user tower / ranker input)."""
        coo = recent.tocoo()
        ok = coo.data <= width
        out = np.zeros((recent.shape[0], width), dtype=np.int64)
        out[coo.row[ok], coo.data[ok].astype(np.int64) - 1] = coo.col[ok] + 1
        return out

    @staticmethod
    def _row_minmax_norm(sc: FloatArray, valid: BoolArray, weight: float) -> FloatArray:
        """``Pipeline._merge``'s per-source normalisation, per row: w * (s - lo) / (hi - lo)."""
        lo = np.where(valid, sc, np.inf).min(axis=1).astype(np.float32)
        hi = np.where(valid, sc, -np.inf).max(axis=1).astype(np.float32)
        denom = (hi.astype(np.float64) - lo.astype(np.float64)).astype(np.float32)
        flat = ~(hi > lo)
        safe = np.where(flat, np.float32(1), denom)
        norm = (sc - np.where(np.isfinite(lo), lo, 0)[:, None]) / safe[:, None]
        norm = np.where(flat[:, None], np.float32(1), norm).astype(np.float32)
        out: FloatArray = (np.float32(weight) * norm).astype(np.float32)
        return out

    # ------------------------------------------------------------------- run
    def recommend(self, prof: Profiles, k: int) -> tuple[IntArray, FloatArray]:
        """Top k per profile -> (items[B, k] item indices, scores[B, k] float32 rank scores), best
        first, padded with -1 / NaN when fewer than k items are left after filtering."""
        k = self.pipeline.check_k(k)
        B, n = prof.n, self.n_items
        n_seen = np.diff(prof.seen.indptr).astype(np.int64)
        has_recent = np.diff(prof.recent.indptr) > 0
        # float32 and summed source by source, as `Pipeline._merge`
        merged = np.zeros((B, n), dtype=np.float32)
        recalled = np.zeros((B, n), dtype=bool)
        offsets = (np.arange(B, dtype=np.int64) * n)[:, None]

        def add(name: str, ids: IntArray, sc: FloatArray, valid: BoolArray) -> None:
            valid = valid & (ids >= 0)
            norm = self._row_minmax_norm(sc.astype(np.float32), valid, self._weights.get(name, 1.0))
            flat = (ids + offsets)[valid]  # ids are unique within a row of one source
            merged.ravel()[flat] += norm[valid]
            recalled.ravel()[flat] = True

        max_seen = int(n_seen.max()) if B else 0
        seen_coo = prof.seen.tocoo()
        for src in self.pipeline.active_sources:
            if src.kind == "history":
                S = self._history_scores(src.name, prof.recent, src.recent)
                S[seen_coo.row, seen_coo.col] = -np.inf
                flat, norm = self._dense_recall(
                    S, src.quota, self._sparse.get(src.name, False), has_recent, self._weights[src.name]
                )
                del S
                merged.ravel()[flat] += norm  # one entry per (row, item): += is exact
                recalled.ravel()[flat] = True
            elif src.kind == "ann":
                pipe = self.pipeline
                assert pipe.user_tower is not None and pipe.index is not None
                use = (prof.user_idx >= 0) | has_recent
                if not use.any():
                    continue
                vecs, use = self._encode(prof, use)
                if not use.any():
                    continue
                width = src.quota + max_seen
                sc_ann, ids_ann = pipe.index.search(vecs, width)
                ids_full = np.full((B, width), -1, dtype=np.int64)
                sc_full = np.zeros((B, width), dtype=np.float32)
                ids_full[use] = np.asarray(ids_ann, dtype=np.int64)
                sc_full[use] = np.asarray(sc_ann, dtype=np.float32)
                lim = (src.quota + n_seen)[:, None]
                add(src.name, ids_full, sc_full, use[:, None] & (np.arange(width)[None, :] < lim))
            else:
                width = min(src.quota + max_seen, n)
                lim = (src.quota + n_seen)[:, None]
                if src.kind == "popular":  # a prefix of the popularity order
                    top = self.cat.pop_order[:width]
                    ids = np.broadcast_to(top, (B, width))
                    sc = np.broadcast_to(self.cat.popularity[top], (B, width))
                    add(src.name, ids, sc, np.arange(width)[None, :] < lim)
                else:  # the pipeline's unordered top set per history length (ties: its argpartition)
                    scores = self.pipeline._trending
                    ids = np.full((B, width), -1, dtype=np.int64)
                    for v in np.unique(n_seen).tolist():
                        top = self._trending_set(src.quota + v)
                        ids[n_seen == v, : len(top)] = top
                    sc = scores[np.maximum(ids, 0)]
                    add(src.name, ids, sc, ids >= 0)
        empty: BoolArray = np.asarray(~recalled.any(axis=1), dtype=bool)
        if empty.any():  # the pipeline's "popular" fallback
            width = min(self.cfg.rank.candidates + max_seen, n)
            top = self.cat.pop_order[:width]
            ids = np.broadcast_to(top, (B, width))
            sc = np.broadcast_to(self.cat.popularity[top], (B, width))
            valid = empty[:, None] & (
                np.arange(width)[None, :] < (self.cfg.rank.candidates + n_seen)[:, None]
            )
            add("popular", ids, sc, valid)
        merged32 = merged

        # ---- filter
        blocked = np.zeros((B, n), dtype=bool)
        if self.cfg.filters.exclude_seen and prof.seen.nnz:
            s = prof.seen.tocoo()
            blocked[s.row, s.col] = True
        cand = recalled & ~blocked
        n_cand = cand.sum(axis=1)
        # key: merged score of candidates; popular fill items below every candidate, in popularity order
        key = np.where(cand, merged32, -np.inf).astype(np.float32)
        short = np.flatnonzero(n_cand < k)
        if len(short):
            need = k - n_cand[short]
            pool_ok = ~cand[short] & ~blocked[short]  # [s, n]
            ok_by_pop = pool_ok[:, self.cat.pop_order]
            take = ok_by_pop & (np.cumsum(ok_by_pop, axis=1) <= need[:, None])
            r, j = np.nonzero(take)
            items_fill = self.cat.pop_order[j]
            key[short[r], items_fill] = (-(1.0 + j) / (n + 1.0)).astype(np.float32)
        n_rank = max(self.cfg.rank.candidates, k)  # what the pipeline ranks
        n_rank_max = n_rank
        if self.model == RECALL_MODEL:  # merged order is final: only the genre-cap window matters
            n_rank_max = min(n_rank_max, max(self.cfg.rerank.window * k, k))
        cand_ids, cand_key = _top_rows(key, n_rank_max)  # ties: lower item index (= Pipeline._top)
        self._online_cut(key, cand, n_cand, n_rank, cand_ids, cand_key)
        valid = cand_ids >= 0
        base_scores = np.where(valid, np.maximum(cand_key, 0), np.nan).astype(np.float32)

        # ---- rank
        if self.model != RECALL_MODEL:
            rank_scores = self._rank(prof, cand_ids, valid)
            order, _ = _top_rows(np.where(valid, rank_scores, -np.inf).astype(np.float32), n_rank_max)
            order = np.where(order >= 0, order, np.arange(n_rank_max)[None, :])
            cand_ids = np.take_along_axis(cand_ids, order, axis=1)
            rank_scores = np.take_along_axis(rank_scores, order, axis=1)
            valid = cand_ids >= 0
        else:
            rank_scores = base_scores

        # ---- rerank
        cap = self.cfg.rerank.genre_cap
        n_valid = valid.sum(axis=1)
        W = min(n_rank_max, self.cfg.rerank.window * k)
        if cap is not None and self.cat.genre_names and W > 0:
            w_row = np.minimum(n_valid, self.cfg.rerank.window * k)
            head_ok = np.arange(W)[None, :] < w_row[:, None]
            keep = self._genre_keep(np.where(head_ok, cand_ids[:, :W], 0), head_ok, cap)
            group = np.where(keep, 0, np.where(head_ok, 1, 2))
            order = np.argsort(group, axis=1, kind="stable")
            head_ids = np.take_along_axis(cand_ids[:, :W], order, axis=1)
            head_sc = np.take_along_axis(rank_scores[:, :W], order, axis=1)
            cand_ids = np.concatenate([head_ids, cand_ids[:, W:]], axis=1)
            rank_scores = np.concatenate([head_sc, rank_scores[:, W:]], axis=1)
        out_ids = cand_ids[:, :k].copy()
        out_sc = rank_scores[:, :k].astype(np.float32)
        out_sc[out_ids < 0] = np.nan
        return out_ids, out_sc

    def _trending_set(self, n: int) -> IntArray:
        """``Pipeline._top_set(trending, n)``, cached per n."""
        top = self._trending_sets.get(n)
        if top is None:
            top = self._trending_sets[n] = self.pipeline._top_set(self.pipeline._trending, n)
        return top

    @staticmethod
    def _online_cut(
        key: FloatArray, cand: BoolArray, n_cand: IntArray, n_rank: int, ids: IntArray, sc: FloatArray
    ) -> None:
        """Rows whose top ``n_rank`` (the pipeline's ranked list) is cut inside a run of tied scores
        that reaches the selected ``ids``: which tied items make the list is ``Pipeline._top``'s
        argpartition over the row's candidates, so take exactly that (in place)."""
        w = ids.shape[1]
        if not w:
            return
        last = sc[:, -1]
        risky = (n_cand > n_rank) & np.isfinite(last)
        if not risky.any():
            return
        rows = np.flatnonzero(risky)
        reach = (key[rows] >= last[rows, None]).sum(axis=1) > n_rank
        for r in rows[reach].tolist():
            items = np.flatnonzero(cand[r])
            vals = key[r, items]
            top = Pipeline._top(vals, n_rank)[:w]
            ids[r] = items[top]
            sc[r] = vals[top]

    def _genre_keep(self, head: IntArray, head_ok: BoolArray, cap: int) -> BoolArray:
        """``Pipeline._genre_cap``'s keep flags for a [B, W] block of ranked heads: item j is kept when
        each of its genres has fewer than ``cap`` kept items above it. The pipeline solves this by
        fixed-point iteration per user; its fixed point is this greedy scan, run here once over the
        W positions for all B rows at a time ([B, G] counters)."""
        B, W = head.shape
        if self._genre_bits is not None and cap <= 8:
            # genre bitmasks per item; level c = the genres with more than c kept items
            gb = self._genre_bits[head]
            levels = [np.zeros(B, dtype=np.int64) for _ in range(cap)]
            keep = np.empty((B, W), dtype=bool)
            for j in range(W):
                gj = gb[:, j]
                ok = ((levels[cap - 1] & gj) == 0) & head_ok[:, j]
                keep[:, j] = ok
                add = np.where(ok, gj, 0)
                for c in range(cap - 1, 0, -1):
                    levels[c] |= levels[c - 1] & add
                levels[0] |= add
            return keep
        gm = self.cat.genre_matrix.astype(np.int16)
        counts = np.zeros((B, gm.shape[1]), dtype=np.int16)
        keep = np.zeros((B, W), dtype=bool)
        full = counts >= cap  # genres already at the cap, per row
        for j in range(W):
            g = gm[head[:, j]]  # [B, G]
            ok = ~(full & (g > 0)).any(axis=1) & head_ok[:, j]
            keep[:, j] = ok
            counts += g * ok[:, None].astype(np.int16)
            full = counts >= cap
        return keep

    def _history_scores(self, name: str, recent: sp.csr_matrix, limit: int) -> FloatArray:
        """Scores [B, n_items] (float32, a fresh array) of the ``limit`` most recent items of each
        profile, bit for bit what the online pipeline's scorer gives for one profile: dense
        item-item rows added in recency order in float32 (rows without history: 0), sparse rows
        summed in float64."""
        kind, mat = self._kernels[name]
        if kind == "dense":
            W: FloatArray = mat
            R = self._recent_matrix(recent, limit)  # [B, limit] item + 1, most recent first
            lens = np.count_nonzero(R, axis=1)
            order = None
            if len(lens) and lens.min() != lens.max():  # longest first: position p is a prefix
                order = np.argsort(-lens, kind="stable")
                R, lens = R[order], lens[order]
            first = R[:, 0]  # limit >= 1
            S = np.take(W, np.maximum(first - 1, 0), axis=0)
            if not first.all():
                S[first == 0] = 0
            for p in range(1, R.shape[1]):
                m_p = int(np.count_nonzero(lens > p))
                if not m_p:
                    break
                S[:m_p] += W[R[:m_p, p] - 1]
            if order is not None:
                out = np.empty_like(S)
                out[order] = S
                S = out
            return S
        scorer = self.pipeline.scorers[name][0]
        if isinstance(scorer, SequenceScorer):  # a sequential model: its ONNX graph, items in order
            return np.array(scorer.batch(self._recent_matrix(recent, limit)), dtype=np.float32, copy=True)
        rows = self._most_recent(recent, limit)
        if kind == "sparse":
            prod = sp.csr_matrix(rows, dtype=np.float64) @ mat
            return np.asarray(prod.toarray(), dtype=np.float32)
        return np.array(self.pipeline.retrievers[name].score_history(rows), dtype=np.float32, copy=True)

    @staticmethod
    def _dense_recall(
        S: FloatArray, quota: int, sparse: bool, has_recent: BoolArray, weight: float
    ) -> tuple[IntArray, FloatArray]:
        """One history source of ``Pipeline._recall`` + its share of ``Pipeline._merge`` for a block
        ``S`` [B, n] (seen items at -inf): the recalled items (top ``quota`` of each row; positive
        scores only for sparse models, finite ones otherwise; none without history) as flat indices
        into [B, n] (row-major), and their normalised scores ``w * (s - lo) / (hi - lo)``.

        The quota-th largest score of each row comes from one in-place ``np.partition`` (the values
        that can never be recalled replaced by distinct stand-ins, which keeps it fast); rows where
        more than ``quota`` items tie at that score take the online pipeline's own argpartition
        (``Pipeline._top_set``; numpy's row-wise argpartition gives the same as the 1-D call)."""
        B, m = S.shape
        q = min(quota, m)
        floor_ramp = -(1.0 + np.arange(m, dtype=np.float32)) if sparse else _ramp(m)
        if q < m and B:
            X = np.where(S > 0, S, floor_ramp) if sparse else np.where(np.isneginf(S), floor_ramp, S)
            X.partition(m - q, axis=1)
            kth = X[:, m - q].copy()
            del X
        else:
            kth = np.full(B, -np.inf, dtype=np.float32)
        if sparse:
            ok_kth = kth > 0
            t_eff = np.where(ok_kth, kth, np.float32(_TINY))  # S >= tiny  <=>  S > 0
        else:
            ok_kth = kth > _ramp(m)[-1]
            t_eff = np.where(ok_kth, kth, np.float32(-_FMAX))  # S >= -max  <=>  finite
        t_eff = np.where(has_recent, t_eff, np.float32(np.inf)).astype(np.float32)
        valid = t_eff[:, None] <= S
        cnt = np.count_nonzero(valid, axis=1)
        tied = np.flatnonzero(ok_kth & has_recent & (cnt > q))
        if len(tied):
            top = np.argpartition(-S[tied], q - 1, axis=1)[:, :q]  # `Pipeline._top_set`
            rows = np.zeros((len(tied), m), dtype=bool)
            np.put_along_axis(rows, top, True, axis=1)
            valid[tied] = rows
            cnt[tied] = q
        flat: IntArray = np.flatnonzero(valid).astype(np.int64, copy=False)
        if not len(flat):
            return flat, np.zeros(0, dtype=np.float32)
        row_of = np.repeat(np.arange(B, dtype=np.int64), cnt)
        vals = S.ravel()[flat]
        some = cnt > 0
        hi = S.max(axis=1)
        lo = kth.copy()
        low = np.flatnonzero(some & ~ok_kth)
        if len(low):
            lo[low] = np.where(valid[low], S[low], np.float32(np.inf)).min(axis=1)
        lo = np.where(some, lo, np.float32(0)).astype(np.float32)
        hi = np.where(some, hi, np.float32(0)).astype(np.float32)
        denom = (hi.astype(np.float64) - lo.astype(np.float64)).astype(np.float32)
        flat_row = ~(hi > lo)
        norm = (vals - lo[row_of]) / np.where(flat_row, np.float32(1), denom)[row_of]
        out: FloatArray = np.where(flat_row[row_of], np.float32(1), norm).astype(np.float32)
        if weight != 1.0:
            out = (np.float32(weight) * out).astype(np.float32)
        return flat, out

    def _encode(self, prof: Profiles, use: BoolArray) -> tuple[FloatArray, BoolArray]:
        """ANN queries of the profiles ``use`` -> (vectors [sum(use'), d], use'): the user tower's
        embeddings (one ONNX call; use' = use), or a factor model's (`FactorQuery`: use' drops the
        profiles it has nothing to query with)."""
        tower = self.pipeline.user_tower
        assert tower is not None
        if isinstance(tower, FactorQuery):
            rows = np.flatnonzero(use)
            recents = self._recent_lists(prof.recent)
            vecs, ok = tower.encode_many(prof.user_idx[rows], [recents[r] for r in rows])
            kept = use.copy()
            kept[rows[~ok]] = False
            return np.ascontiguousarray(vecs[ok]), kept
        feats = self.pipeline.features
        idx = prof.user_idx[use]
        hist = self._recent_matrix(prof.recent[np.flatnonzero(use)], tower.max_history)
        ucat = np.zeros((len(idx), 4), dtype=np.int64)
        if feats is not None:
            known = idx >= 0
            ucat[known] = np.asarray(feats.users_cat)[idx[known]]
        uid = np.where(idx >= 0, idx + 1, 0).astype(np.int64)
        out = tower.sess.run([tower.output], {"uid": uid, "ucat": ucat, "hist": hist})
        return np.ascontiguousarray(np.asarray(out[0], dtype=np.float32)), use

    def _rank(self, prof: Profiles, cand_ids: IntArray, valid: BoolArray) -> FloatArray:
        """Ranker scores [B, C] of the candidates (NaN where invalid): the ranker's own per-profile
        input builder, one ONNX Runtime call for the whole block (`OnnxRanker.run_feeds`)."""
        ranker = self.pipeline.rankers.get(self.model)
        if ranker is None:
            raise InvalidArgumentError(f"unknown model {self.model!r}")
        feats = self.pipeline.features
        recents = self._recent_lists(prof.recent)
        feeds: list[dict[str, Any]] = []
        counts: list[int] = []
        for r in range(prof.n):
            items = cand_ids[r][valid[r]]
            counts.append(len(items))
            if not len(items):
                continue
            u = int(prof.user_idx[r])
            recent = recents[r]
            ucat = feats.users_cat[u] if feats is not None and u >= 0 else np.zeros(4, dtype=np.int64)
            feeds.append(ranker._feed(RankContext(None if u < 0 else u, ucat, recent), items))
        out = np.full(cand_ids.shape, np.nan, dtype=np.float32)
        if not feeds:
            return out
        flat = ranker.run_feeds(feeds)
        out[valid] = flat[: int(valid.sum())]
        return out
