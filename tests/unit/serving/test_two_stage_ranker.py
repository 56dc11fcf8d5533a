"""Serving a two-stage model's ranker (`TwoStageRanker`): its ONNX inputs come from the model's own
`CandidateFeaturizer.features_for`, so serving scores equal `TwoStage`'s own scores, and the pipeline
and REST API serve ``model=ncf`` next to ``model=recall``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from recstack.errors import NotFoundError
from recstack.models.ranking.two_stage import (
    CandidateFeaturizer,
    TwoStage,
    _all_stable_ranks,
    _stable_ranks,
    _stable_top,
)
from recstack.serving._ranker import RankContext, TwoStageRanker
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.pipeline import Pipeline, RecRequest
from recstack.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def two_stage_release(
    blocks_two_stage: tuple[MemoryRelease, TwoStage, Path],
) -> tuple[MemoryRelease, TwoStage]:
    rel, ts, _ = blocks_two_stage
    return rel, ts


def test_stable_ranks_and_top_match_a_stable_argsort() -> None:
    # row [3, 1, 3, -inf, 1]: stable descending order 0, 2, 1, 4, 3 -> ranks 0, 2, 1, 4, 3
    s = np.array([[3.0, 1.0, 3.0, -np.inf, 1.0]], dtype=np.float32)
    assert _stable_ranks(s, np.array([[4, 2, 0, 3, 1]])).tolist() == [[3, 1, 0, 4, 2]]
    # top 3: items 0, 2 (the 3s) and item 1 (the first of the tied 1s); -inf never
    assert np.flatnonzero(_stable_top(s, 3)[0]).tolist() == [0, 1, 2]
    assert np.flatnonzero(_stable_top(s, 5)[0]).tolist() == [0, 1, 2, 4]
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = rng.integers(0, 5, size=(4, 30)).astype(np.float32)
        order = np.argsort(-m, axis=1, kind="stable")
        ranks = np.argsort(order, axis=1)
        items = rng.integers(0, 30, size=(4, 7))
        assert np.array_equal(_stable_ranks(m, items), np.take_along_axis(ranks, items, axis=1))


def test_all_stable_ranks_equal_stable_ranks_of_every_item() -> None:
    """Every item's rank at once (serving memoises them) = `_stable_ranks` of every item: ties (also
    of -inf and of -0.0 / 0.0) by the lower index; a row with NaN gets `_stable_ranks`'s ranks."""
    s = np.array([[3.0, 1.0, 3.0, -np.inf, 1.0, -np.inf, 0.0, -0.0]], dtype=np.float32)
    # descending, ties by index: 0, 2 (3s), 1, 4 (1s), 6, 7 (zeros), 3, 5 (-inf)
    assert _all_stable_ranks(s).tolist() == [[0, 2, 1, 6, 3, 7, 4, 5]]
    assert _all_stable_ranks(s).dtype == np.int16
    rng = np.random.default_rng(2)
    every = np.broadcast_to(np.arange(40), (5, 40))
    for _ in range(30):
        m = rng.integers(0, 6, size=(5, 40)).astype(np.float32)
        m[rng.random((5, 40)) < 0.1] = -np.inf
        m[0, rng.integers(0, 40, 2)] = np.nan
        assert np.array_equal(_all_stable_ranks(m), _stable_ranks(m, np.ascontiguousarray(every)))


def test_user_state_rows_equal_features_for(two_stage_release: tuple[MemoryRelease, TwoStage]) -> None:
    """`features_for` = `rows` of `user_state`, with or without every item's rank memoised."""
    _, ts = two_stage_release
    fz: CandidateFeaturizer = ts.featurizer()
    users = np.arange(0, 60, 4, dtype=np.int64)
    hist = ts.train_matrix()[users]
    rng = np.random.default_rng(4)
    items = np.where(rng.random((len(users), 25)) < 0.9, rng.integers(0, 40, (len(users), 25)), -1)
    for us in (users, None):
        want = fz.features_for(hist, us, items, standardise_over="recall")
        mats = fz.source_scores(hist, us)
        for full in (False, True):
            state = fz.user_state(hist, us, mats, fz.recall_lists(hist, mats), full_ranks=full)
            got = fz.rows(state, items)
            for a, b in zip(want, got, strict=True):
                assert np.array_equal(a, b)


def test_column_scopes_say_what_each_feature_column_depends_on(
    two_stage_release: tuple[MemoryRelease, TwoStage],
) -> None:
    """`column_scopes`: ``item`` columns are the same for every user, ``user`` columns the same for
    every item, and the ``pair`` columns are the only ones that vary with both (the memo of
    `TwoStageRanker` keeps a user's pair columns and shares the item columns)."""
    _, ts = two_stage_release
    fz = ts.featurizer()
    dense_scope, cat_scope = fz.column_scopes()
    assert len(dense_scope) == len(fz.dense_names()) and len(cat_scope) == len(fz.cat_cards)
    assert fz.features.has_time and "pair" in dense_scope
    train = ts.train_matrix()
    every = np.arange(train.shape[1], dtype=np.int64)[None, :]
    rows = [fz.features_for(train[[u]], np.array([u]), every, standardise_over="recall") for u in (0, 5, 31)]
    for scopes, part in ((dense_scope, 1), (cat_scope, 0)):
        for j, scope in enumerate(scopes):
            cols = [r[part][0, :, j] for r in rows]
            same_users = all(np.array_equal(c, cols[0]) for c in cols)
            same_items = all(len(np.unique(c)) == 1 for c in cols)
            if scope == "item":
                assert same_users, (part, j)
            elif scope == "user":
                assert same_items, (part, j)
            else:
                assert scope == "pair" and not same_users and not same_items, (part, j)


def test_features_for_reproduces_build(two_stage_release: tuple[MemoryRelease, TwoStage]) -> None:
    _, ts = two_stage_release
    fz: CandidateFeaturizer = ts.featurizer()
    users = np.arange(10, dtype=np.int64)
    hist = ts.train_matrix()[users]
    built = fz.build(hist, users)
    cat, dense, mask = fz.features_for(hist, users, built.items)
    assert np.array_equal(cat, built.cat) and np.array_equal(dense, built.dense)
    assert np.array_equal(mask, built.mask)
    # the model's own lists: standardising over "recall" is the same list, hence the same rows
    cat_r, dense_r, _ = fz.features_for(hist, users, built.items, standardise_over="recall")
    assert np.array_equal(cat_r, built.cat) and np.allclose(dense_r, built.dense)


def test_ablated_features_are_zero_and_unknown_names_refused(
    two_stage_release: tuple[MemoryRelease, TwoStage],
) -> None:
    from recstack.errors import InvalidArgumentError

    _, ts = two_stage_release
    fz: CandidateFeaturizer = ts.featurizer()
    names = fz.dense_names()
    users = np.arange(10, dtype=np.int64)
    hist = ts.train_matrix()[users]
    full = fz.build(hist, users)
    cut = CandidateFeaturizer(fz.sources, fz.features, fz.per_source, ("genre_", "local_popularity"))
    cat, dense, _ = cut.features_for(hist, users, full.items)
    gone = [j for j, n in enumerate(names) if n.startswith("genre_") or n == "local_popularity"]
    kept = [j for j in range(len(names)) if j not in gone]
    assert len(gone) == 4 and "local_popularity" in names  # 3 genres + the time feature
    assert not dense[:, :, gone].any() and full.dense[:, :, gone].any()
    assert np.array_equal(dense[:, :, kept], full.dense[:, :, kept]) and np.array_equal(cat, full.cat)
    with pytest.raises(InvalidArgumentError, match="no such dense feature"):
        CandidateFeaturizer(fz.sources, fz.features, fz.per_source, ("colour",))


def _ctx(ts: TwoStage, u: int | None, hist_row: Any) -> RankContext:
    return RankContext(u, np.zeros(4, np.int64), np.asarray(hist_row.indices, dtype=np.int64))


def test_serving_scores_equal_two_stage_scores(two_stage_release: tuple[MemoryRelease, TwoStage]) -> None:
    rel, ts = two_stage_release
    p = Pipeline(rel)
    ranker = p.rankers["ncf"]
    assert isinstance(ranker, TwoStageRanker) and p.unavailable_rankers == {}
    train = ts.train_matrix()
    for u in range(0, 60, 7):
        cands = ts.candidates([u])[0]
        own = ts.score_users([u])[0][cands]
        served = ranker.score(_ctx(ts, u, train[u]), cands)
        np.testing.assert_allclose(served, own, atol=1e-5)
        # any other candidate order / subset: same scores per item
        sub = cands[::-2]
        np.testing.assert_allclose(ranker.score(_ctx(ts, u, train[u]), sub), own[::-2], atol=1e-5)
        # a new user with the same history (no index)
        hist = sp.csr_matrix(train[u])
        new_own = ts.score_history(hist)[0][cands]
        np.testing.assert_allclose(ranker.score(_ctx(ts, None, train[u]), cands), new_own, atol=1e-5)
    # no history at all: popularity order, like TwoStage
    empty = RankContext(None, np.zeros(4, np.int64), np.zeros(0, np.int64))
    items = np.arange(5, dtype=np.int64)
    cold = ts.score_history(sp.csr_matrix((1, train.shape[1]), dtype=np.float32))[0][items]
    np.testing.assert_allclose(ranker.score(empty, items), cold, atol=1e-6)


def test_pipeline_and_api_serve_ncf_and_recall(two_stage_release: tuple[MemoryRelease, TwoStage]) -> None:
    rel, ts = two_stage_release
    p = Pipeline(rel)
    assert p.models == ["ncf", "recall"] and p.default_model == "ncf"
    res = p.recommend(RecRequest(user_id=3, k=5, model="ncf"))
    # the items TwoStage recalls itself carry its own scores for this user (index 2)
    own = ts.score_users([2])[0]
    mine = np.isin(res.items, ts.candidates([2])[0])
    assert mine.sum() >= 3
    np.testing.assert_allclose(res.scores[mine], own[res.items[mine]], atol=1e-5)

    def load(target: str) -> MemoryRelease:
        if target not in ("production", rel.id):
            raise NotFoundError(f"no release or channel {target!r}")
        return rel

    app = create_app(ServingSettings(api_key="secret"), loader=load)
    with TestClient(app) as c:
        bodies = {}
        for model in ("ncf", "recall"):
            r = c.get("/v1/users/3/recommendations", params={"k": 5, "model": model})
            assert r.status_code == 200, r.text
            bodies[model] = r.json()
            assert bodies[model]["model"] == model and len(bodies[model]["items"]) == 5
        ncf = [(it["item_id"], it["score"]) for it in bodies["ncf"]["items"]]
        rec = [(it["item_id"], it["score"]) for it in bodies["recall"]["items"]]
        assert ncf != rec
        # the API serves the pipeline's ranking
        assert [i for i, _ in ncf] == [rel.dataset.item_vocab.ids.to_list()[j] for j in res.items.tolist()]


def test_batch_scorer_matches_online_with_two_stage_ranker(
    two_stage_release: tuple[MemoryRelease, TwoStage],
) -> None:
    from recstack.batch._pipeline import BatchScorer

    rel, _ = two_stage_release
    pipe = Pipeline(rel)
    scorer = BatchScorer(pipe, "ncf")
    users = np.arange(0, 60, 5)
    ids, sc = scorer.recommend(scorer.user_profiles(users), 6)
    for r, u in enumerate(users.tolist()):
        res = pipe.recommend(RecRequest(user_id=rel.dataset.user_vocab.external([u])[0], k=6, model="ncf"))
        ok = ids[r] >= 0
        np.testing.assert_array_equal(ids[r][ok], res.items, err_msg=f"user {u}")
        np.testing.assert_allclose(sc[r][ok], res.scores, rtol=1e-5, atol=1e-5)


def test_two_stage_ranker_serves_the_factorised_graph(
    two_stage_release: tuple[MemoryRelease, TwoStage],
) -> None:
    """The serving ranker scores with the factorised graph of the model's ranker (`FactorisedNet`):
    the same scores as the exported whole-row graph within float rounding, for known users (memo),
    users unknown to the model and batch calls alike."""
    import onnxruntime as ort

    rel, ts = two_stage_release
    r = Pipeline(rel).rankers["ncf"]
    assert isinstance(r, TwoStageRanker) and r.fsess is not None
    whole = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
    fz = ts.featurizer()
    train = ts.train_matrix()
    items = np.arange(train.shape[1], dtype=np.int64)
    for u, recent in ((3, np.zeros(0, np.int64)), (None, np.asarray(train[5].indices[:4], dtype=np.int64))):
        ctx = RankContext(u, np.zeros(4, np.int64), recent)
        feed = r.feed(ctx, items)
        assert feed is not None and set(feed) == {"pair", "item", "ucat", "udense", "urow"}
        hist, users = r._history(ctx)
        cat, dense, _ = fz.features_for(hist, users, items[None, :], standardise_over="recall")
        want = whole.run(["score"], {"cat": cat[0], "dense": dense[0]})[0]
        np.testing.assert_allclose(r.score(ctx, items), want, atol=1e-5, rtol=1e-5)
        assert np.array_equal(r.run_feeds([r._feed(ctx, items)]), r.score(ctx, items))
