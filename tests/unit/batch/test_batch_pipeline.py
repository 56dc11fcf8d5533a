"""The batched pipeline gives, profile by profile, exactly what the online `Pipeline.recommend` gives
(same items in the same order, bit-identical scores) for known users and for two-item liked-items
profiles, with the recall score and with an ONNX ranker, with and without the genre cap, with quotas
that cut through ties and through zero scores, and with histories whose timestamps tie."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from recstack.batch._pipeline import BatchScorer, _top_rows
from recstack.data.dataset import Dataset
from recstack.data.synthetic import synthesize
from recstack.models.base import top_k
from recstack.serving._release import MemoryRelease, fit_memory_release
from recstack.serving._state import build_state
from recstack.serving.pipeline import (
    FilterConfig,
    Pipeline,
    PipelineConfig,
    RankConfig,
    RecRequest,
    RerankConfig,
    SourceConfig,
)
from recstack.serving.settings import ServingSettings


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


def _check_users(pipe: Pipeline, scorer: BatchScorer, k: int, rtol: float = 0.0) -> None:
    """``rtol`` > 0: scores within it (an ANN source: the index scores a block of queries with one
    matrix product, a request's one query with a vector product; BLAS rounds them differently)."""
    ds = pipe.catalog.dataset
    ids, sc = scorer.recommend(scorer.user_profiles(np.arange(ds.n_users)), k)
    for u in range(ds.n_users):
        res = pipe.recommend(RecRequest(user_id=ds.user_vocab.external([u])[0], k=k))
        ok = ids[u] >= 0
        np.testing.assert_array_equal(ids[u][ok], res.items, err_msg=f"user {u}")
        np.testing.assert_allclose(sc[u][ok], res.scores, rtol=rtol, atol=0, err_msg=f"user {u}")


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


def test_users_match_with_a_sequential_source(mem_release: MemoryRelease) -> None:
    """SASRec's ONNX graph over the users' histories in time order, batched as online."""
    from recstack.models.registry import create

    sasrec = create(
        "sasrec", dim=8, heads=1, blocks=1, max_len=6, epochs=1, val_fraction=0.0, num_threads=1
    ).fit(mem_release.dataset)
    rel = MemoryRelease(
        id="mem-seq",
        dataset=mem_release.dataset,
        retrievers={**mem_release.retrievers, "sasrec": sasrec},
        features=mem_release.features,
    )
    sources = (
        SourceConfig(name="sasrec", kind="history", quota=20, recent=4),
        SourceConfig(name="itemknn", kind="history", quota=20),
        SourceConfig(name="popular", kind="popular", quota=10),
    )
    pipe = Pipeline(rel, PipelineConfig(sources=sources))
    assert "sasrec" in [s.name for s in pipe.active_sources]
    _check_users(pipe, BatchScorer(pipe), 10)


def _check_pairs(pipe: Pipeline, scorer: BatchScorer, top_n: int, k: int, rtol: float = 0.0) -> None:
    top = pipe.catalog.pop_order[:top_n]
    i, j = np.triu_indices(top_n, 1)
    a, b = top[i], top[j]
    ids, sc = scorer.recommend(scorer.pair_profiles(a, b), k)
    vocab = pipe.catalog.dataset.item_vocab
    for r in range(len(a)):
        res = pipe.recommend(RecRequest(liked_items=vocab.external([a[r], b[r]]), k=k, model="recall"))
        np.testing.assert_array_equal(ids[r], res.items, err_msg=f"pair {a[r]}, {b[r]}")
        np.testing.assert_allclose(sc[r], res.scores, rtol=rtol, atol=0, err_msg=f"pair {a[r]}, {b[r]}")
        if pipe.config.filters.exclude_seen:  # the two liked items are excluded
            assert a[r] not in ids[r] and b[r] not in ids[r]


def test_pairs_match_liked_items_requests(mem_release: MemoryRelease) -> None:
    pipe = Pipeline(mem_release, PipelineConfig())
    _check_pairs(pipe, BatchScorer(pipe, "recall"), 12, 10)


@pytest.fixture(scope="module")
def sparse_release() -> MemoryRelease:
    """More items, and item-kNN rows of 4 neighbours: two-item profiles have few positive scores."""
    ds = synthesize(300, 400, 9000, seed=5)
    return fit_memory_release(ds, "mem-sparse", models=("pop", "itemknn", "ease"), itemknn={"neighbours": 4})


def _config(
    quota: int, *, cap: int | None = 3, window: int = 4, candidates: int = 300, exclude_seen: bool = True
) -> PipelineConfig:
    return PipelineConfig(
        filters=FilterConfig(exclude_seen=exclude_seen),
        sources=(
            SourceConfig(name="itemknn", kind="history", quota=quota, recent=5),
            SourceConfig(name="ease", kind="history", quota=quota, recent=50, weight=0.7),
            SourceConfig(name="popular", kind="popular", quota=min(quota, 20), weight=0.3),
            SourceConfig(name="trending", kind="trending", quota=7),
        ),
        rank=RankConfig(candidates=candidates),
        rerank=RerankConfig(genre_cap=cap, window=window),
    )


@pytest.mark.parametrize(
    "cfg",
    [
        _config(300),  # quota above the positive item-kNN scores of most profiles: zeros never recalled
        _config(3),  # tiny quota: the cut falls inside runs of tied scores
        _config(12, cap=1, window=1, candidates=15),  # ranked list cut inside the candidates
        _config(200, cap=None),
        _config(12, exclude_seen=False),  # seen items stay: the popular sources keep them too
    ],
    ids=["quota300", "quota3", "cap1-cut", "no-cap", "seen-kept"],
)
def test_users_and_pairs_match_under_configs(sparse_release: MemoryRelease, cfg: PipelineConfig) -> None:
    pipe = Pipeline(sparse_release, cfg)
    scorer = BatchScorer(pipe, "recall")
    _check_users(pipe, scorer, 10)
    _check_pairs(pipe, scorer, 14, 6)


def test_users_with_tied_timestamps_follow_the_store_order(batch_dataset: Dataset) -> None:
    """Equal timestamps: the batch reads histories in the order of the pipeline's feature store."""
    inter = batch_dataset.interactions
    coarse = inter.with_columns((inter["timestamp"] // 10**8 * 10**8).alias("timestamp")).sample(
        fraction=1.0, shuffle=True, seed=3
    )
    ds = batch_dataset.with_interactions(coarse)
    rel = fit_memory_release(ds, "mem-ties", models=("pop", "itemknn", "ease"))
    cfg = PipelineConfig(
        sources=(
            SourceConfig(name="itemknn", kind="history", quota=20, recent=3),
            SourceConfig(name="ease", kind="history", quota=20, recent=3),
        )
    )
    pipe = build_state(rel, ServingSettings(store="embedded"), cfg).pipeline
    _check_users(pipe, BatchScorer(pipe), 10)


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


def test_top_rows_matches_top_k() -> None:
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, size=(300, 50)).astype(np.float32)  # many ties
    s[rng.random(s.shape) < 0.3] = -np.inf
    s[:5] = -np.inf  # rows without any finite score
    for k in (1, 7, 49, 50, 60):
        ids, sc = _top_rows(s, k)
        ref_ids, ref_sc = top_k(s, k)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(sc, ref_sc)
    s[7, 3] = np.nan  # NaN: the exact form
    np.testing.assert_array_equal(_top_rows(s, 5)[0], top_k(s, 5)[0])


@pytest.fixture(scope="module")
def ml100k_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The serving pipeline of a release built from ML-100K (data dir) (pop, itemknn, ease)."""
    from recstack.release import load
    from recstack.release.build import BuildConfig, build

    cfg = BuildConfig.from_config(
        {
            "dataset": {"source": "ml-100k"},
            "evaluation": {"enabled": False},
            "features": {"enabled": False},
            "models": [{"name": "pop"}, {"name": "itemknn"}, {"name": "ease"}],
            "index": {"backend": "none"},
        }
    )
    root = tmp_path_factory.mktemp("ml100k-releases")
    rel = load(build(cfg, root).id, str(root))
    return build_state(rel, ServingSettings(store="embedded", releases_dir=str(root))).pipeline


@pytest.mark.slow
@pytest.mark.ml100k
def test_ml100k_users_and_pairs_match(ml100k_pipeline: Pipeline) -> None:
    """On real data (equal timestamps, item-kNN rows with zeros, near-tied merged scores): a sample
    of users at k=100 and of pairs of the 1000 most popular items at k=10, bit for bit."""
    pipe = ml100k_pipeline
    scorer = BatchScorer(pipe, "recall")
    rng = np.random.default_rng(7)
    users = np.sort(rng.choice(pipe.catalog.dataset.n_users, 150, replace=False))
    ids, sc = scorer.recommend(scorer.user_profiles(users), 100)
    vocab_u = pipe.catalog.dataset.user_vocab
    for r, u in enumerate(users.tolist()):
        res = pipe.recommend(RecRequest(user_id=vocab_u.external([u])[0], k=100, model="recall"))
        np.testing.assert_array_equal(ids[r][ids[r] >= 0], res.items, err_msg=f"user {u}")
        np.testing.assert_array_equal(sc[r][ids[r] >= 0], res.scores, err_msg=f"user {u}")
    top = np.sort(pipe.catalog.pop_order[:1000])
    a, b = np.sort(rng.choice(top, (300, 2), replace=True), axis=1).T
    keep = a != b
    a, b = a[keep], b[keep]
    ids, sc = scorer.recommend(scorer.pair_profiles(a, b), 10)
    vocab = pipe.catalog.dataset.item_vocab
    for r in range(len(a)):
        res = pipe.recommend(RecRequest(liked_items=vocab.external([a[r], b[r]]), k=10, model="recall"))
        np.testing.assert_array_equal(ids[r], res.items, err_msg=f"pair {a[r]}, {b[r]}")
        np.testing.assert_array_equal(sc[r], res.scores, err_msg=f"pair {a[r]}, {b[r]}")


def test_users_and_pairs_match_with_an_ann_index_over_als(batch_dataset: Dataset) -> None:
    """A release whose index holds ALS's item factors (no user tower: the [large] default): the ANN
    source queries it with the user's factors, or folds a liked-items profile in; batch as online."""
    als = {"factors": 8, "iterations": 3}
    rel = fit_memory_release(batch_dataset, "mem-als", models=("pop", "als"), als=als)
    rel.item_embeddings = rel.retriever("als").item_factors
    rel.embeddings_model = "als"
    state = build_state(rel, ServingSettings(index="exact"))
    pipe = state.pipeline
    assert "ann" in [s.name for s in pipe.active_sources]
    _check_users(pipe, BatchScorer(pipe), 10, rtol=1e-6)
    _check_pairs(pipe, BatchScorer(pipe, "recall"), 8, 10, rtol=1e-6)
