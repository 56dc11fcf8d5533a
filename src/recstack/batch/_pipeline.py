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
from recstack.models.base import Retriever
from recstack.serving._ranker import RankContext
from recstack.serving.pipeline import RECALL_MODEL, Pipeline

__all__ = ["BatchScorer", "Profiles"]

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


def _top_rows(scores: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
    """Row-wise top k of [B, m] -> (ids[B, k], scores[B, k]), best first, ties: lower index first;
    -inf entries come back as id -1 (the contract of `recstack.models.base.top_k`, with two plain
    sorts instead of a lexsort)."""
    B, m = scores.shape
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        ps = np.take_along_axis(scores, part, axis=1)
        # ties at the cut: argpartition picks any of them; keep the lowest indices instead
        cut = ps.min(axis=1, keepdims=True)
        tied = (scores == cut).sum(axis=1) > (ps == cut).sum(axis=1)
        if tied.any():
            rows = np.flatnonzero(tied)
            sub = scores[rows]
            order = np.lexsort((np.broadcast_to(np.arange(m), sub.shape), -sub), axis=1)[:, :kk]
            part[rows] = order
        part.sort(axis=1)
    else:
        part = np.broadcast_to(np.arange(m), (B, m)).copy()
    ps = np.take_along_axis(scores, part, axis=1)
    o = np.argsort(-ps, axis=1, kind="stable")
    ids = np.take_along_axis(part, o, axis=1).astype(np.int64)
    sc = np.take_along_axis(ps, o, axis=1).astype(np.float32)
    ids[np.isneginf(sc)] = -1
    if kk < k:
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        sc = np.pad(sc, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return ids, sc


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
        hist = self.cat.hist_items
        dedup = hist.copy()
        dedup.sum_duplicates()
        self._dups = dedup.nnz < hist.nnz
        self._weights = {s.name: float(s.weight) for s in self.cfg.sources}
        self._pop_rank = np.empty(self.n_items, dtype=np.int64)
        self._pop_rank[self.cat.pop_order] = np.arange(self.n_items)

    # --------------------------------------------------------------- profiles
    def user_profiles(self, user_idx: npt.ArrayLike) -> Profiles:
        """Profiles of known users (dense indices) from the release's histories (ordered by time)."""
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        hist = self.cat.hist_items
        if self._dups:  # rare: repeated (user, item) rows; keep the last occurrence of each item
            rows = [self._dedup_recent(hist.indices[hist.indptr[u] : hist.indptr[u + 1]]) for u in idx]
            return self._from_lists(rows, idx)
        a, b = hist.indptr[idx], hist.indptr[idx + 1]
        lens = (b - a).astype(np.int64)
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        pos = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], lens) + np.repeat(a, lens)
        cols = hist.indices[pos].astype(np.int64)
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
        merged = np.zeros((B, n), dtype=np.float64)
        recalled = np.zeros((B, n), dtype=bool)
        offsets = (np.arange(B, dtype=np.int64) * n)[:, None]

        def add(name: str, ids: IntArray, sc: FloatArray, valid: BoolArray) -> None:
            valid = valid & (ids >= 0)
            norm = self._row_minmax_norm(sc.astype(np.float32), valid, self._weights.get(name, 1.0))
            flat = (ids + offsets)[valid]  # ids are unique within a row of one source
            merged.ravel()[flat] += norm[valid].astype(np.float64)
            recalled.ravel()[flat] = True

        max_seen = int(n_seen.max()) if B else 0
        for src in self.pipeline.active_sources:
            if src.kind == "history":
                rows = self._most_recent(prof.recent, src.recent)
                ids, sc = self._history_recall(self.pipeline.retrievers[src.name], rows, src.quota)
                add(src.name, ids, sc, np.broadcast_to(has_recent[:, None], ids.shape))
            elif src.kind == "ann":
                pipe = self.pipeline
                assert pipe.user_tower is not None and pipe.index is not None
                use = (prof.user_idx >= 0) | has_recent
                if not use.any():
                    continue
                vecs = self._encode(prof, use)
                width = src.quota + max_seen
                sc_ann, ids_ann = pipe.index.search(vecs, width)
                ids_full = np.full((B, width), -1, dtype=np.int64)
                sc_full = np.zeros((B, width), dtype=np.float32)
                ids_full[use] = np.asarray(ids_ann, dtype=np.int64)
                sc_full[use] = np.asarray(sc_ann, dtype=np.float32)
                lim = (src.quota + n_seen)[:, None]
                add(src.name, ids_full, sc_full, use[:, None] & (np.arange(width)[None, :] < lim))
            else:
                scores = self.cat.popularity if src.kind == "popular" else self.pipeline._trending
                width = min(src.quota + max_seen, n)
                top = (
                    self.cat.pop_order[:width] if src.kind == "popular" else self.pipeline._top(scores, width)
                )
                ids = np.broadcast_to(top, (B, width))
                sc = np.broadcast_to(scores[top], (B, width))
                add(src.name, ids, sc, np.arange(width)[None, :] < (src.quota + n_seen)[:, None])
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
        merged32 = merged.astype(np.float32)

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
        n_rank_max = max(self.cfg.rank.candidates, k)
        if self.model == RECALL_MODEL:  # merged order is final: only the genre-cap window matters
            n_rank_max = min(n_rank_max, max(self.cfg.rerank.window * k, k))
        cand_ids, cand_key = _top_rows(key, n_rank_max)  # ties: lower item index (= Pipeline._top)
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

    def _genre_keep(self, head: IntArray, head_ok: BoolArray, cap: int) -> BoolArray:
        """``Pipeline._genre_cap``'s keep flags for a [B, W] block of ranked heads: item j is kept when
        each of its genres has fewer than ``cap`` kept items above it. The pipeline solves this by
        fixed-point iteration per user; its fixed point is this greedy scan, run here once over the
        W positions for all B rows at a time ([B, G] counters)."""
        gm = self.cat.genre_matrix.astype(np.int16)
        B, W = head.shape
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

    @staticmethod
    def _history_recall(retr: Retriever, rows: sp.csr_matrix, quota: int) -> tuple[IntArray, FloatArray]:
        """``retr.recommend_history(rows, quota)`` as a set: the same scores, history mask and
        argpartition as `recstack.models.base.top_k` (so the same items), without sorting them
        (the merge does not need the order). Falls back to ``recommend_history`` when a model
        overrides it."""
        if type(retr).recommend_history is not Retriever.recommend_history:
            return retr.recommend_history(rows, quota)
        scores = np.array(retr.score_history(rows), dtype=np.float32, copy=True)
        coo = rows.tocoo()
        scores[coo.row, coo.col] = -np.inf
        n, m = scores.shape
        kk = min(quota, m)
        part = (
            np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (n, 1))
        ).astype(np.int64)
        sc = np.take_along_axis(scores, part, axis=1)
        part[~np.isfinite(sc) & (sc < 0)] = -1
        return part, sc

    def _encode(self, prof: Profiles, use: BoolArray) -> FloatArray:
        """User-tower embeddings [sum(use), d] for the profiles ``use`` (one ONNX call)."""
        tower = self.pipeline.user_tower
        assert tower is not None
        feats = self.pipeline.features
        idx = prof.user_idx[use]
        hist = self._recent_matrix(prof.recent[np.flatnonzero(use)], tower.max_history)
        ucat = np.zeros((len(idx), 4), dtype=np.int64)
        if feats is not None:
            known = idx >= 0
            ucat[known] = np.asarray(feats.users_cat)[idx[known]]
        uid = np.where(idx >= 0, idx + 1, 0).astype(np.int64)
        out = tower.sess.run([tower.output], {"uid": uid, "ucat": ucat, "hist": hist})
        return np.ascontiguousarray(np.asarray(out[0], dtype=np.float32))

    def _rank(self, prof: Profiles, cand_ids: IntArray, valid: BoolArray) -> FloatArray:
        """Ranker scores [B, C] of the candidates (NaN where invalid): the ranker's own per-profile
        input builder, one ONNX Runtime call for the whole block."""
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
            ucat = np.zeros(4, dtype=np.int64)
            affinity = None
            if feats is not None:
                if u >= 0:
                    ucat = feats.users_cat[u]
                if len(recent):
                    g = feats.genres[recent].sum(axis=0)
                    affinity = (g / max(float(g.sum()), 1.0)).astype(np.float32)
            ctx = RankContext(None if u < 0 else u, ucat, recent, affinity)
            if ranker._external is not None and ranker.features is not None:
                feeds.append(ranker._external(ranker.features, ctx, items, [m.name for m in ranker.inputs]))
            else:
                feeds.append(ranker._feed(ctx, items))
        out = np.full(cand_ids.shape, np.nan, dtype=np.float32)
        if not feeds:
            return out
        feed = {name: np.concatenate([f[name] for f in feeds], axis=0) for name in feeds[0]}
        flat = np.asarray(ranker.sess.run([ranker.output], feed)[0], dtype=np.float32).reshape(-1)
        out[valid] = flat[: int(valid.sum())]
        return out
