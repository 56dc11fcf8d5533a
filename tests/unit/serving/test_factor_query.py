"""`FactorQuery`: the ANN source of a release whose index holds ALS's item factors (no user tower,
the [large] default) queries it with the user's own factor row, so the ANN's top items are ALS's
top items; a user without factors is folded in from its history; nothing to query with: no query."""

from __future__ import annotations

from typing import Any

import numpy as np

from recstack.models.base import top_k
from recstack.serving._ranker import FactorQuery
from recstack.serving._release import fit_memory_release
from recstack.serving._state import build_state
from recstack.serving.pipeline import RecRequest
from recstack.serving.settings import ServingSettings


def _release(ds: Any) -> Any:
    rel = fit_memory_release(ds, "als-index", ("pop", "als"), als={"factors": 4, "iterations": 3})
    rel.item_embeddings = rel.retriever("als").item_factors
    rel.embeddings_model = "als"
    return rel


def test_known_users_query_with_their_factors_and_get_als_top_items(tiny_dataset: Any) -> None:
    rel = _release(tiny_dataset)
    als = rel.retriever("als")
    pipe = build_state(rel, ServingSettings(index="exact")).pipeline
    q = pipe.user_tower
    assert isinstance(q, FactorQuery) and pipe.index is not None
    assert [s.name for s in pipe.active_sources if s.kind == "ann"] == ["ann"]
    for u in range(tiny_dataset.n_users):
        vec = q.encode(u, np.zeros(4, np.int64), np.zeros(0, np.int64))
        assert vec is not None and np.array_equal(vec, als.user_factors[u])
        scores, ids = pipe.index.search(vec[None, :], 5)
        want_ids, want_sc = top_k(als.score_users([u]), 5)
        # the ANN's top 5 are ALS's top 5 (scores equal; ids too, up to ties)
        assert np.allclose(scores[0], want_sc[0], atol=1e-5)
        tied = np.isclose(want_sc[0][:, None], want_sc[0][None, :], atol=1e-5).sum() > 5
        assert tied or set(ids[0].tolist()) == set(want_ids[0].tolist())


def test_users_without_factors_are_folded_in_or_not_queried(tiny_dataset: Any) -> None:
    rel = _release(tiny_dataset)
    als = rel.retriever("als")
    q = FactorQuery(als)
    recent = np.array([3, 0, 5], dtype=np.int64)
    folded = q.encode(None, np.zeros(4, np.int64), recent)
    import scipy.sparse as sp

    row = sp.csr_matrix((np.ones(3, np.float32), np.sort(recent), [0, 3]), shape=(1, als.n_items))
    assert folded is not None and np.allclose(folded, als.fold_in(row)[0])
    assert q.encode(None, np.zeros(4, np.int64), np.zeros(0, np.int64)) is None
    # a known index whose factor row is zeros (no training interactions) is folded in too
    q.user_factors = q.user_factors.copy()
    q.user_factors[2] = 0.0
    q._learnt = np.any(q.user_factors != 0, axis=1)
    assert not q.knows(np.array([2]))[0]
    assert np.allclose(q.encode(2, np.zeros(4, np.int64), recent), folded)  # type: ignore[arg-type]
    vecs, ok = q.encode_many(np.array([0, -1, 2, -1]), [recent[:0], recent, recent[:0], recent[:0]])
    assert ok.tolist() == [True, True, False, False] and not vecs[2:].any()
    # a profile alone gives no query: the pipeline skips the source for it
    pipe = build_state(rel, ServingSettings(index="exact")).pipeline
    res = pipe.recommend(RecRequest(profile={"age": 30}, k=3))
    assert not any("ann" in s for s in res.sources)
    res = pipe.recommend(RecRequest(liked_items=tiny_dataset.item_vocab.external([3, 5]), k=3, explain=True))
    assert res.explain is not None and any("ann" in e["sources"] for e in res.explain)


def test_a_release_without_a_factor_index_gets_no_factor_query(tiny_dataset: Any) -> None:
    rel = fit_memory_release(tiny_dataset, "no-index", ("pop", "itemknn"))
    pipe = build_state(rel, ServingSettings(index="exact")).pipeline
    assert pipe.user_tower is None and pipe.index is None
    rel.item_embeddings = np.ones((tiny_dataset.n_items, 2), np.float32)
    rel.embeddings_model = "itemknn"  # not a factor model: no query
    assert build_state(rel, ServingSettings(index="exact")).pipeline.user_tower is None


def test_an_index_that_fails_costs_the_ann_source_not_the_request(tiny_dataset: Any) -> None:
    """A failing (or timed-out) index server: the request is answered from the other sources with
    ``ann_unavailable`` in its fallbacks; after 3 failures in a row the breaker skips the index."""
    from recstack.errors import UnavailableError

    rel = _release(tiny_dataset)
    pipe = build_state(rel, ServingSettings(index="exact")).pipeline
    assert pipe.index is not None
    calls: list[int] = []

    def down(queries: Any, k: int) -> Any:
        calls.append(k)
        raise UnavailableError("milvus search in 'items' failed: deadline exceeded")

    pipe.index.search = down  # type: ignore[method-assign]
    for u in range(1, 6):
        res = pipe.recommend(RecRequest(user_id=u, k=3))
        assert len(res.items) == 3 and "ann_unavailable" in res.fallbacks
        assert not any("ann" in s for s in res.sources)
    assert len(calls) == 3  # the breaker opened after the third failure: no further calls
