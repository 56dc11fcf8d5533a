"""The recommendation pipeline on the tiny catalogue of conftest.py (popularity worked out there:
distinct users per item index 0..11 = 12, 12, 5, 6, 6, 6, 6, 6, 5, 4, 4, 3, so the popularity order
is 0, 1, 3, 4, 5, 6, 7, 2, 8, 9, 10, 11; genres by index % 3: Action, Comedy, Drama)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recstack.errors import ConfigError, InvalidArgumentError, UnknownIdError
from recstack.serving._release import MemoryRelease
from recstack.serving._state import build_state
from recstack.serving.pipeline import Pipeline, PipelineConfig, RecRequest, RerankConfig, genre_cap
from recstack.serving.settings import ServingSettings

POP_ORDER = [0, 1, 3, 4, 5, 6, 7, 2, 8, 9, 10, 11]


def ids(items: Any) -> list[int]:
    """External ids (100 + index) of item indices."""
    return [100 + int(i) for i in items]


@pytest.fixture(scope="module")
def pipe(tiny_release: MemoryRelease) -> Pipeline:
    return Pipeline(tiny_release)


@pytest.fixture(scope="module")
def full(full_release: MemoryRelease) -> Pipeline:
    return build_state(full_release, ServingSettings()).pipeline


def test_catalog_popularity_matches_hand_count(pipe: Pipeline) -> None:
    assert pipe.catalog.popularity.tolist() == [12, 12, 5, 6, 6, 6, 6, 6, 5, 4, 4, 3]
    assert pipe.catalog.pop_order.tolist() == POP_ORDER


def test_known_user_excludes_seen_items(pipe: Pipeline) -> None:
    # user 1 saw items 0, 1, 3
    res = pipe.recommend(RecRequest(user_id=1, k=9))
    assert res.user_kind == "known" and not res.cold_start
    assert len(res.items) == 9 and not {0, 1, 3} & set(res.items.tolist())
    assert all(set(s) <= {"itemknn", "popular"} for s in res.sources)
    assert any("itemknn" in s for s in res.sources)
    assert np.all(np.diff(res.scores) <= 1e-6) or res.model == "recall"
    assert set(res.timings) == {"resolve", "recall", "filter", "rank", "rerank"}


def test_exclude_seen_can_be_switched_off(pipe: Pipeline) -> None:
    res = pipe.recommend(RecRequest(user_id=1, k=12, exclude_seen=False))
    assert {0, 1, 3} <= set(res.items.tolist())


def test_genre_include_and_explicit_exclude(pipe: Pipeline) -> None:
    # comedies are 1, 4, 7, 10; user 1 saw 1; 104 excluded -> only 7 and 10 remain (even when k = 5)
    res = pipe.recommend(RecRequest(user_id=1, k=5, genres=["comedy"], exclude=[104]))
    assert sorted(ids(res.items)) == [107, 110]


def test_genre_exclude_and_year_range(pipe: Pipeline) -> None:
    res = pipe.recommend(RecRequest(user_id=1, k=10, exclude_genres=["Action"]))
    assert all(i % 3 != 0 for i in res.items.tolist())
    # years 1995..1997 are items 5, 6, 7; none seen by user 1
    res = pipe.recommend(RecRequest(user_id=1, k=10, year_min=1995, year_max=1997))
    assert sorted(ids(res.items)) == [105, 106, 107]


def test_unknown_user_gets_popular_cold_start(pipe: Pipeline) -> None:
    res = pipe.recommend(RecRequest(user_id="stranger", k=5))
    assert res.cold_start and res.user_kind == "unknown"
    assert "no_history" in res.fallbacks
    # popular order 0, 1, 3, 4, 5; genres A C A C D: never 3 of one genre -> unchanged by the cap
    assert ids(res.items) == [100, 101, 103, 104, 105]
    assert res.sources == [["popular"]] * 5


def test_genre_cap_reorders(tiny_release: MemoryRelease) -> None:
    p = Pipeline(tiny_release, PipelineConfig(rerank=RerankConfig(genre_cap=2)))
    res = p.recommend(RecRequest(user_id="stranger", k=8, explain=True))
    # greedy over 0A 1C 3A 4C 5D 6A 7C 2D 8D ...: 6 (3rd Action) and 7 (3rd Comedy) move behind 2
    assert ids(res.items) == [100, 101, 103, 104, 105, 102, 106, 107]
    assert res.explain is not None
    assert [e["demoted_by_genre_cap"] for e in res.explain] == [False] * 6 + [True] * 2
    assert res.explain[5]["rank_position"] == 8  # item 2 was 8th before the rerank


def test_genre_cap_is_greedy() -> None:
    # genres: 0 {A}, 1 {A}, 2 {A, B}, 3 {B}, 4 {A}, 5 {C}; cap 2 greedy keeps 0, 1, 3, 5
    genres = [(0,), (0,), (0, 1), (1,), (0,), (2,)]
    top, demoted = genre_cap(np.arange(6), genres, 4, 2)
    assert top.tolist() == [0, 1, 3, 5] and not demoted.any()
    # top 3: the walk stops at 3 (the 3rd kept item)
    top, demoted = genre_cap(np.arange(6), genres, 3, 2)
    assert top.tolist() == [0, 1, 3] and not demoted.any()
    # fewer kept than k: the demoted items follow, in order, flagged
    top, demoted = genre_cap(np.arange(6), genres, 6, 2)
    assert top.tolist() == [0, 1, 3, 5, 2, 4]
    assert demoted.tolist() == [False, False, False, False, True, True]
    # positions are the candidates' own: a reordered head keeps them
    top, demoted = genre_cap(np.array([5, 4, 2, 0]), [genres[i] for i in (5, 4, 2, 0)], 3, 1)
    # cap 1: 5 {C} and 4 {A} kept; 2 {A, B} and 0 {A} over the cap -> 2 fills the 3rd place, demoted
    assert top.tolist() == [5, 4, 2] and demoted.tolist() == [False, False, True]


def test_profile_uses_demographic_popularity_only_with_a_personal_verdict(
    pipe: Pipeline, tiny_release: MemoryRelease
) -> None:
    profile = {"age": 20, "gender": "F", "occupation": "student"}
    # a release without a cold-users verdict: the profile is not used (popular, not "demographic")
    res = pipe.recommend(RecRequest(profile=profile, k=3))
    assert res.user_kind == "profile" and res.cold_start
    assert "demographic" not in res.fallbacks and ids(res.items) == ids(POP_ORDER[:3])
    verdict = {"model": "segment", "personal": True, "params": {"features": ["occupation"], "alpha": 0.0}}
    seg = Pipeline(dataclasses.replace(tiny_release, cold_start=verdict))
    res = seg.recommend(RecRequest(profile=profile, k=3))
    assert "demographic" in res.fallbacks
    # students are users 1..10: none of them has item 0 or 1 beyond their cycle, so the top differs
    assert ids(res.items) != ids(POP_ORDER[:3])


def test_liked_items_become_the_history(pipe: Pipeline) -> None:
    res = pipe.recommend(RecRequest(liked_items=[103, 104], k=5))
    assert res.user_kind == "liked_items"
    assert not {3, 4} & set(res.items.tolist())
    assert any("itemknn" in s for s in res.sources)


def test_rankers_pick_the_order(full: Pipeline) -> None:
    assert full.models == ["neg", "pos", "recall"] and full.default_model == "neg"
    # unknown user: every item is a candidate; neg scores -(index + 1) -> lowest indices first
    res = full.recommend(RecRequest(user_id="x", k=5, model="neg"))
    assert ids(res.items) == [100, 101, 102, 103, 104]
    assert res.scores.tolist() == [-1.0, -2.0, -3.0, -4.0, -5.0]
    res = full.recommend(RecRequest(user_id="x", k=3, model="pos"))
    assert ids(res.items) == [111, 110, 109]


def test_two_tower_ann_source_with_explain(full: Pipeline) -> None:
    # user tower -> [1, 0]; item i embeds to [i / 12, 1] -> ANN score i / 12
    res = full.recommend(RecRequest(user_id=1, k=4, model="recall", explain=True))
    assert res.explain is not None
    for item, e in zip(res.items.tolist(), res.explain, strict=True):
        assert "ann" in e["sources"]
        assert e["recall_scores"]["ann"] == pytest.approx(item / 12, abs=1e-6)
        assert set(e) >= {"merged_score", "rank_score", "rank_position", "final_position"}
    # a profile alone queries the user tower only when the release's verdict says it beats popular
    res = full.recommend(RecRequest(profile={"age": 30}, k=3))
    assert res.user_kind == "profile" and not any("ann" in s for s in res.sources)


def test_profile_alone_queries_the_user_tower_with_a_verdict(full_release: MemoryRelease) -> None:
    verdict = {"model": "popular", "personal": True, "ann_profile": True, "params": {}}
    tower = build_state(dataclasses.replace(full_release, cold_start=verdict), ServingSettings()).pipeline
    res = tower.recommend(RecRequest(profile={"age": 30}, k=3))
    assert res.user_kind == "profile" and any("ann" in s for s in res.sources)


def test_similar_items(pipe: Pipeline) -> None:
    items, scores, model = pipe.similar(0, 3)
    assert model == "itemknn" and 0 not in items.tolist() and len(items) == 3
    assert np.all(np.diff(scores) <= 0)
    with pytest.raises(InvalidArgumentError, match="allowed: itemknn"):
        pipe.similar(0, 3, "nope")


@pytest.mark.parametrize(
    ("req", "error", "match"),
    [
        (RecRequest(user_id=1, k=0), InvalidArgumentError, "between 1 and 100"),
        (RecRequest(user_id=1, k=101), InvalidArgumentError, "between 1 and 100"),
        (RecRequest(user_id=1, model="deepfm"), InvalidArgumentError, "allowed: recall"),
        (
            RecRequest(user_id=1, genres=["Opera"]),
            InvalidArgumentError,
            "allowed genres: Action, Comedy, Drama",
        ),
        (RecRequest(user_id=1, exclude=[999]), UnknownIdError, "999"),
        (RecRequest(liked_items=[5]), UnknownIdError, "liked item"),
    ],
)
def test_bad_requests(pipe: Pipeline, req: RecRequest, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        pipe.recommend(req)


def test_config_toml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        "k_max = 50\n[[sources]]\nname = 'knn'\nkind = 'history'\nretriever = 'itemknn'\nquota = 20\n"
        "[[sources]]\nname = 'popular'\nkind = 'popular'\n[rerank]\ngenre_cap = 2\n"
    )
    cfg = PipelineConfig.from_toml(path)
    assert cfg.k_max == 50 and [s.name for s in cfg.sources] == ["knn", "popular"]
    assert PipelineConfig.from_config(cfg.dump_config()) == cfg
    path.write_text("[[sources]]\nname = 'a'\nkind = 'popular'\n[[sources]]\nname = 'a'\nkind = 'trending'\n")
    with pytest.raises(ConfigError, match="unique"):
        PipelineConfig.from_toml(path)


def test_history_source_by_alias(tiny_release: MemoryRelease) -> None:
    from recstack.serving.pipeline import SourceConfig

    cfg = PipelineConfig(
        sources=(
            SourceConfig(name="knn", kind="history", retriever="itemknn", quota=5),
            SourceConfig(name="trend", kind="trending", quota=5),
        )
    )
    p = Pipeline(tiny_release, cfg)
    res = p.recommend(RecRequest(user_id=2, k=4))
    assert {s for ss in res.sources for s in ss} <= {"knn", "trend", "fill"}
    assert [s.name for s in p.active_sources] == ["knn", "trend"]


def test_history_source_takes_the_first_retriever_the_release_has(tiny_dataset: Any) -> None:
    """The default ``ease`` source scores with time_ease in a release without EASE (a release built
    for large data); with neither it is off. TOML takes the list form."""
    from recstack.serving._release import fit_memory_release
    from recstack.serving.pipeline import SourceConfig

    default = {s.name: s for s in PipelineConfig().sources}["ease"]
    assert default.retriever == ("ease", "time_ease")
    rel = fit_memory_release(tiny_dataset, "tiny-te", ("pop", "time_ease"))
    p = Pipeline(rel)
    assert "ease" in [s.name for s in p.active_sources] and p.retrievers["ease"] is rel.retriever("time_ease")
    res = p.recommend(RecRequest(user_id=2, k=4, explain=True))
    assert res.explain is not None and any("ease" in e["sources"] for e in res.explain)
    both = fit_memory_release(tiny_dataset, "tiny-both", ("pop", "time_ease", "ease"))
    assert Pipeline(both).retrievers["ease"] is both.retriever("ease")  # the first of the list
    none = fit_memory_release(tiny_dataset, "tiny-none", ("pop",))
    assert "ease" not in [s.name for s in Pipeline(none).active_sources]
    src = SourceConfig.from_config({"name": "x", "kind": "history", "retriever": ["ease", "time_ease"]})
    assert src.retriever == ("ease", "time_ease")


@pytest.mark.parametrize(
    ("model", "kind", "sparse"),
    [
        ("itemknn", "dense", True),
        ("rp3beta", "dense", True),
        ("ease", "dense", False),
        ("pop", "generic", False),
        ("ease:head-tail", "generic", False),  # EASE's head-tail mode: score_history on one row
    ],
)
def test_history_kernels_equal_score_history(tiny_dataset: Any, model: str, kind: str, sparse: bool) -> None:
    import scipy.sparse as sp

    from recstack.models.registry import create
    from recstack.serving._kernels import history_scorer, item_item_kernel

    params = {"exact_max_items": 5, "tail_neighbours": 3} if model == "ease:head-tail" else {}
    r = create(model.split(":")[0], **params).fit(tiny_dataset)
    # sparse item-item models (item-kNN's similarity, RP3beta's weights) are densified on a small
    # catalogue and recall only related items; EASE's dense weights are summed as they are
    assert item_item_kernel(r, 12)[0::2] == (kind, sparse)
    scorer, is_sparse = history_scorer(r, 12)
    assert is_sparse == sparse
    items = np.array([3, 0, 7], dtype=np.int64)
    row = sp.csr_matrix((np.ones(3, np.float32), (np.zeros(3, int), items)), shape=(1, 12))
    np.testing.assert_allclose(scorer(items), r.score_history(row)[0], rtol=1e-5, atol=1e-6)


def test_ranker_with_unsupported_inputs_is_not_served(tiny_release: MemoryRelease, tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("mystery", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["mystery"], ["score"])], "g", [x], [y])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    rel = MemoryRelease(
        id="odd",
        dataset=tiny_release.dataset,
        retrievers=tiny_release.retrievers,
        features=tiny_release.features,
        ranker_paths={"odd": tmp_path / "m.onnx"},
    )
    p = Pipeline(rel)
    assert p.models == ["recall"] and "mystery" in p.unavailable_rankers["odd"]
    assert len(p.recommend(RecRequest(user_id=1, k=3)).items) == 3
