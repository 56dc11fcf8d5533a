"""The batched pipeline gives, profile by profile, exactly what the online `Pipeline.recommend` gives
(same items in the same order, same scores) for known users and for two-item liked-items profiles,
with the recall score and with an ONNX ranker, with and without the genre cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from recstack.batch._pipeline import BatchScorer, _top_rows
from recstack.serving._release import MemoryRelease
from recstack.serving.pipeline import Pipeline, PipelineConfig, RecRequest, RerankConfig


def _linear_ranker(path: Path) -> Path:
    """ONNX ranker: score = -iid (iid = item index + 1) -> prefers low item indices."""
    iid = helper.make_tensor_value_info("iid", TensorProto.INT64, ["n"])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    nodes = [
        helper.make_node("Cast", ["iid"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "w"], ["score"]),
    ]
    w = helper.make_tensor("w", TensorProto.FLOAT, [], [-1.0])
    graph = helper.make_graph(nodes, "ranker", [iid], [out], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _check_users(pipe: Pipeline, scorer: BatchScorer, k: int) -> None:
    ds = pipe.catalog.dataset
    ids, sc = scorer.recommend(scorer.user_profiles(np.arange(ds.n_users)), k)
    for u in range(ds.n_users):
        res = pipe.recommend(RecRequest(user_id=ds.user_vocab.external([u])[0], k=k))
        ok = ids[u] >= 0
        np.testing.assert_array_equal(ids[u][ok], res.items, err_msg=f"user {u}")
        np.testing.assert_allclose(sc[u][ok], res.scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [5, 30])
def test_users_match_online_pipeline(mem_release: MemoryRelease, k: int) -> None:
    pipe = Pipeline(mem_release, PipelineConfig())
    _check_users(pipe, BatchScorer(pipe), k)


def test_users_match_without_genre_cap(mem_release: MemoryRelease) -> None:
    pipe = Pipeline(mem_release, PipelineConfig(rerank=RerankConfig(genre_cap=None)))
    _check_users(pipe, BatchScorer(pipe), 10)


def test_users_match_with_onnx_ranker(mem_release: MemoryRelease, tmp_path: Path) -> None:
    rel = MemoryRelease(
        id="mem-ranker",
        dataset=mem_release.dataset,
        retrievers=mem_release.retrievers,
        features=mem_release.features,
        ranker_paths={"neg": _linear_ranker(tmp_path / "neg.onnx")},
    )
    pipe = Pipeline(rel, PipelineConfig())
    scorer = BatchScorer(pipe)
    assert scorer.model == "neg"
    _check_users(pipe, scorer, 10)


def test_pairs_match_liked_items_requests(mem_release: MemoryRelease) -> None:
    pipe = Pipeline(mem_release, PipelineConfig())
    scorer = BatchScorer(pipe)
    top = pipe.catalog.pop_order[:12]
    i, j = np.triu_indices(12, 1)
    a, b = top[i], top[j]
    ids, sc = scorer.recommend(scorer.pair_profiles(a, b), 10)
    vocab = pipe.catalog.dataset.item_vocab
    for r in range(len(a)):
        res = pipe.recommend(RecRequest(liked_items=vocab.external([a[r], b[r]]), k=10))
        np.testing.assert_array_equal(ids[r], res.items)
        np.testing.assert_allclose(sc[r], res.scores, rtol=1e-6, atol=1e-6)
        assert a[r] not in ids[r] and b[r] not in ids[r]  # the two liked items are excluded


def test_seen_items_are_excluded(mem_release: MemoryRelease) -> None:
    pipe = Pipeline(mem_release, PipelineConfig())
    scorer = BatchScorer(pipe)
    prof = scorer.user_profiles(np.arange(20))
    ids, _ = scorer.recommend(prof, 10)
    seen = prof.seen.toarray() > 0
    assert not seen[np.arange(20)[:, None], ids].any()


def test_top_rows_breaks_ties_by_lower_index() -> None:
    s = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, -np.inf, 5.0, 5.0, 1.0]], dtype=np.float32)
    ids, sc = _top_rows(s, 2)
    # row 0: three items tie at 3.0 -> items 1 and 2 (lowest indices); row 1: 5.0 at 2 and 3
    np.testing.assert_array_equal(ids, [[1, 2], [2, 3]])
    np.testing.assert_array_equal(sc, [[3.0, 3.0], [5.0, 5.0]])
    ids, _ = _top_rows(s, 5)
    np.testing.assert_array_equal(ids[1], [2, 3, 4, 0, -1])  # -inf comes back as -1
