"""The serving `Pipeline` cut into the two halves that the recall and rank services run.

``Pipeline.recommend`` runs resolve -> recall -> filter -> rank -> rerank in one call. The gRPC
deployment runs the same stages in two processes: `recall_stage` (resolve, recall sources, merge,
filters, popular fill, the best ``rank.candidates`` by merged score) and `rank_stage` (resolve,
ranker scores, genre-cap rerank, top k). Both call the pipeline's own stage methods; only the
orchestration of ``recommend`` is repeated here, and ``tests/unit/grpc/test_stages.py`` holds
``rank_stage(recall_stage(req)) == Pipeline.recommend(req)`` (items and scores) so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstack.serving.pipeline import Pipeline, RecRequest

__all__ = ["Candidates", "Ranked", "rank_stage", "recall_stage"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass
class Candidates:
    """Recall output: ``items`` [m] item indices, best merged recall score first, ``scores`` [m]
    float32 merged recall scores (sum of min-max normalised source scores times weights), the
    recall sources of each item, and how the user was resolved."""

    items: IntArray
    scores: FloatArray
    sources: list[list[str]]
    user_kind: str
    cold_start: bool
    fallbacks: list[str]


@dataclass
class Ranked:
    """Rank output: ``positions`` [k] indices into the candidate list, best first; ``items`` [k]
    item indices; ``scores`` [k] float32 rank scores (higher is better)."""

    positions: IntArray
    items: IntArray
    scores: FloatArray
    model: str


def recall_stage(pipeline: Pipeline, req: RecRequest) -> Candidates:
    """Resolve the user, run every recall source, merge, filter (seen, ``exclude``, genres, years),
    fill from popular when fewer than k remain, keep the best ``rank.candidates`` (at least k)."""
    p = pipeline
    fallbacks: list[str] = []
    k = p.check_k(req.k)
    cat = p.catalog
    exclude_idx = (
        cat.item_indices(list(req.exclude), what="excluded item") if req.exclude else np.zeros(0, np.int64)
    )
    user = p.resolve(req)
    parts = p._recall(user, fallbacks)
    items, merged, tags, src_names = p._merge(parts)
    items, merged, tags = p._filter_fill(items, merged, tags, user, req, exclude_idx, k, fallbacks)
    n_rank = min(len(items), max(p.config.rank.candidates, k))
    top = p._top(merged, n_rank)
    return Candidates(
        items=items[top],
        scores=merged[top].astype(np.float32),
        sources=p._source_lists(tags[top], src_names),
        user_kind=user.kind,
        cold_start=user.cold_start,
        fallbacks=fallbacks,
    )


def rank_stage(pipeline: Pipeline, req: RecRequest, items: IntArray, recall_scores: FloatArray) -> Ranked:
    """Score candidates ``items`` [m] (recall order) with the ranker ``req.model`` (``recall`` keeps
    ``recall_scores`` [m]), order them, apply the genre cap, return the top k."""
    p = pipeline
    k = p.check_k(req.k)
    model = p.check_model(req.model)
    items = np.asarray(items, dtype=np.int64)
    rank_scores, order = p.rank(p.resolve(req), model, items, np.asarray(recall_scores, dtype=np.float32))
    final, _ = p._genre_cap(order, k, items)
    return Ranked(positions=final, items=items[final], scores=rank_scores[final], model=model)
