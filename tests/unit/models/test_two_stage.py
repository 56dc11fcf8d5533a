"""TwoStage's ranker: one net by default, an ensemble (`ranker_seeds`, `ranker_mix`) scored, saved and
exported as one ranker (one ONNX graph, inputs cat / dense, equal to PyTorch within 1e-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import scipy.sparse as sp

from blocks_data import SMALL_TWO_STAGE, make_blocks_dataset
from recstack.data.dataset import Dataset
from recstack.models.ranking.ensemble import RankerEnsemble
from recstack.models.ranking.ncf import NCF
from recstack.models.ranking.two_stage import TwoStage
from recstack.models.registry import create

SMALL = SMALL_TWO_STAGE


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_blocks_dataset()


@pytest.fixture(scope="module")
def ensemble_model(data: Dataset) -> TwoStage:
    return TwoStage(**SMALL, ranker_seeds=2, ranker_mix=("dnn",)).fit(data)


def test_default_is_one_net(data: Dataset) -> None:
    ts = TwoStage(**SMALL).fit(data)
    assert isinstance(ts.ranker, NCF)
    # the default ranker: one net (no ensemble) with the hyperparameters validation chose
    cfg = TwoStage.Config()
    assert (cfg.ranker_seeds, cfg.ranker_mix, cfg.ranker_bagging) == (1, (), False)
    r = TwoStage(ranker="ncf")._new_ranker({**cfg.ranker_params, "seed": 42})
    assert isinstance(r, NCF) and r.config.hidden == (128, 64) and r.config.weight_decay == 1e-3


def test_ensemble_members(ensemble_model: TwoStage) -> None:
    r = ensemble_model.ranker
    assert isinstance(r, RankerEnsemble)
    # ranker_seeds nets of each architecture of (ranker, *ranker_mix), seeds seed, seed + 1
    assert [(m.name, m.config.seed) for m in r.members] == [
        ("ncf", 42),
        ("ncf", 43),
        ("dnn", 42),
        ("dnn", 43),
    ]
    assert ensemble_model.fit_result["ranker_val_ndcg@10"] == r.fit_result["best_val"]


def test_ensemble_onnx_on_real_rows(ensemble_model: TwoStage, tmp_path: Path) -> None:
    r = ensemble_model.ranker
    assert r is not None
    fz = ensemble_model.featurizer()
    users = np.arange(20, dtype=np.int64)
    items = np.tile(np.arange(40, dtype=np.int64), (20, 1))  # 20 users x 40 items: 800 real rows
    cat, dense, _ = fz.features_for(ensemble_model.train_matrix()[users], users, items)
    cat, dense = cat.reshape(-1, cat.shape[2]), dense.reshape(-1, dense.shape[2])
    sess = ort.InferenceSession(str(r.export_onnx(tmp_path / "r.onnx")), providers=["CPUExecutionProvider"])
    out = sess.run(["score"], {"cat": cat, "dense": dense})[0]
    np.testing.assert_allclose(out, r.score({"cat": cat, "dense": dense}), atol=1e-5, rtol=1e-5)


def test_ensemble_save_load(ensemble_model: TwoStage, tmp_path: Path) -> None:
    ensemble_model.save(tmp_path / "m")
    # one ONNX graph for the whole ensemble (release build and serving take the ranker's only .onnx)
    onnx = [p for p in (tmp_path / "m").rglob("*.onnx") if "sources" not in p.parts]
    assert [p.relative_to(tmp_path / "m").as_posix() for p in onnx] == ["ranker/ranker.onnx"]
    back = TwoStage.load(tmp_path / "m")
    assert isinstance(back.ranker, RankerEnsemble) and len(back.ranker.members) == 4
    users = np.arange(10)
    np.testing.assert_array_equal(back.score_users(users), ensemble_model.score_users(users))


def test_bagged_ensemble(data: Dataset) -> None:
    ts = TwoStage(**SMALL, ranker_seeds=2, ranker_bagging=True).fit(data)
    r = ts.ranker
    assert isinstance(r, RankerEnsemble) and r.fit_result["bagged"]
    own = [m.fit_result["best_val"] for m in r.members]
    assert ts.fit_result["ranker_val_ndcg@10"] == pytest.approx(np.mean(own))


def test_a_model_saved_with_other_features_is_refused(
    ensemble_model: TwoStage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved two-stage model records its ranker's dense inputs by name; loading it where the
    featurizer computes other features (another recstack version) is a clear ArtifactError, also for
    a model saved before the names were recorded (its ranker's input width then tells)."""
    import json
    import shutil

    from recstack.errors import ArtifactError
    from recstack.models.ranking.two_stage import CandidateFeaturizer

    d = ensemble_model.save(tmp_path / "m")
    names = json.loads((d / "dense_features.json").read_text())
    assert names == ensemble_model.featurizer().dense_names()
    TwoStage.load(d)  # the same features: loads
    (d / "dense_features.json").write_text(json.dumps([*names[:-1], "old_feature"]))
    with pytest.raises(ArtifactError, match="another recstack version") as err:
        TwoStage.load(d)
    assert f"not in the model: {names[-1]}; no longer computed: old_feature" in str(err.value)
    old = shutil.copytree(d, tmp_path / "old")
    (old / "dense_features.json").unlink()
    TwoStage.load(old)  # no names recorded, the width matches: loads
    # a recstack that computes one more column than the old model's ranker takes
    more = CandidateFeaturizer.dense_names
    monkeypatch.setattr(CandidateFeaturizer, "dense_names", lambda self: [*more(self), "new_feature"])
    with pytest.raises(ArtifactError, match=f"trained on {len(names)} dense features"):
        TwoStage.load(old)


def test_refit_all_trains_the_chosen_point_again_on_every_list(data: Dataset) -> None:
    """``refit_all``: the validated net's best epoch count, trained again without early stopping (no
    validation metric) on every list; the other hyperparameters are the chosen point's."""
    chosen = TwoStage(**SMALL).fit(data)
    again = TwoStage(**SMALL, refit_all=True).fit(data)
    assert isinstance(chosen.ranker, NCF) and isinstance(again.ranker, NCF)
    best = int(chosen.ranker.fit_result["best_epoch"])
    assert best >= 1 and again.fit_result["ranker_fit"]["best_epoch"] == 0  # 0: trained without validation
    assert again.ranker.config.epochs == best
    assert again.ranker.config.hidden == chosen.ranker.config.hidden
    users = np.arange(10)
    assert not np.array_equal(again.score_users(users), chosen.score_users(users))


def test_holdout_users_are_capped(data: Dataset) -> None:
    """Above ``max_holdout_users`` eligible users a fold labels a uniform sample of that many."""
    full = TwoStage(**SMALL).fit(data)
    assert full.fit_result["holdout_lists"] > 2 * 30
    capped = TwoStage(**SMALL, max_holdout_users=30).fit(data)
    assert capped.fit_result["holdout_lists"] == 2 * 30  # two folds of 30 users
    assert capped.score_users(np.arange(3)).shape == (3, data.n_items)


def test_temporal_holdout_folds_label_successive_windows_forward_in_time(data: Dataset) -> None:
    from recstack.models.ranking.two_stage import _holdout

    parts = [_holdout(data, "temporal", 0.2, seed=42, fold=f, folds=2) for f in range(2)]
    n = data.n_interactions
    for f, (a, b) in enumerate(parts):
        # fold f labels the f-th of 2 windows of 10% each (the latest 20% of the data) and learns from
        # everything before it
        assert b.n_interactions == round(0.1 * n)
        assert a.n_interactions == n - (2 - f) * round(0.1 * n)
        assert a.interactions["timestamp"].max() <= b.interactions["timestamp"].min()  # type: ignore[operator]
    assert parts[0][1].interactions["timestamp"].max() <= parts[1][1].interactions["timestamp"].min()  # type: ignore[operator]
    # one fold: the latest 20% as before
    a, b = _holdout(data, "temporal", 0.2, seed=42)
    assert b.n_interactions == round(0.2 * n) and a.n_interactions == n - round(0.2 * n)


def test_user_latest_holdout_labels_each_users_latest_interactions(data: Dataset) -> None:
    from recstack.models.ranking.two_stage import _holdout

    a, b = _holdout(data, "user_latest", 0.25, seed=42)
    assert a.n_interactions + b.n_interactions == data.n_interactions
    first_b = dict(b.interactions.group_by("user").agg(pl.col("timestamp").min()).iter_rows())
    last_a = dict(a.interactions.group_by("user").agg(pl.col("timestamp").max()).iter_rows())
    sizes = dict(data.interactions.group_by("user").len().iter_rows())
    for u, t in first_b.items():
        assert last_a[u] <= t  # each user's labels come after their own training rows
    # round(0.75 * n) rows of each user stay (every blocks user has 12 rows at most, 9 or more)
    kept = dict(a.interactions.group_by("user").len().iter_rows())
    assert all(kept[u] == round(0.75 * n) for u, n in sizes.items())


def _classics_data() -> Dataset:
    """40 users rate their block (item % 4) and the classics 0-3 on days 0-39; later 20 of them rate
    the new items 36-39, then 15 new users rate the classics: all-time popularity orders the new
    users best, what is trending does not."""
    rng = np.random.default_rng(1)
    day = 86_400
    rows = []
    for u in range(40):
        block = np.flatnonzero(np.arange(4, 36) % 4 == u % 4) + 4
        for t, it in enumerate([0, 1, 2, 3, *rng.choice(block, 6, replace=False)]):
            rows.append((u + 1, int(it) + 100, 4.0, u * day + t))
    for u in range(20):
        for t, it in enumerate([36, 37, 38, 39, 4 + u % 4]):
            rows.append((u + 1, it + 100, 4.0, 100 * day + u * 3600 + t))
    for u in range(40, 55):
        for t, it in enumerate([0, 1, 2, 3, 4 + u % 4]):
            rows.append((u + 1, it + 100, 4.0, 110 * day + u * 3600 + t))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items = pl.DataFrame(
        {
            "item_id": [100 + i for i in range(40)],
            "title": [f"Movie {i}" for i in range(40)],
            "genres": [["Drama"] for _ in range(40)],
        }
    )
    return Dataset.from_frames("classics", inter, None, items)


def test_cold_order_is_chosen_on_the_holdouts_cold_users(tmp_path: Path) -> None:
    data = _classics_data()
    params = {**SMALL, "holdout": "temporal", "holdout_folds": 1, "holdout_fraction": 0.3}
    auto = TwoStage(**params).fit(data)
    got = auto.fit_result["cold_val_ndcg@10"]
    # the holdout's cold users (the 15 new ones) rated the classics: all-time popularity wins there
    assert auto.fit_result["cold_order"] == "pop" and auto.fit_result["cold_val_users"] == 15
    assert got["pop"] > got["trending"] and got["pop"] > got["recent_pop"]
    empty = sp.csr_matrix((1, data.n_items), dtype=np.float32)
    classics = {data.item_vocab.get(100 + i) for i in range(4)}
    assert set(np.argsort(-auto.score_history(empty)[0])[:4]) == classics
    # forced to the trend: a user without history gets the `trending` order of the whole data
    trend = TwoStage(**params, cold_order="trending").fit(data)
    assert trend.fit_result["cold_order"] == "trending"
    assert trend.cold_scores is not None and auto.cold_scores is not None
    np.testing.assert_allclose(trend.cold_scores, create("trending").fit(data).score_history(empty)[0])
    np.testing.assert_allclose(auto.cold_scores, create("pop").fit(data).score_history(empty)[0])
    # the chosen order is part of the saved model
    auto.save(tmp_path / "m")
    back = TwoStage.load(tmp_path / "m")
    np.testing.assert_array_equal(back.score_history(empty), auto.score_history(empty))


def test_cold_order_without_cold_users_follows_the_holdout() -> None:
    # random holdouts have no users first seen in the labelled part: no evidence, so a world without
    # time keeps all-time popularity (the order before issue 19) and a forward holdout the trend
    data = _classics_data()
    rnd = TwoStage(**{**SMALL, "holdout": "random", "holdout_folds": 1}).fit(data)
    assert rnd.fit_result["cold_val_users"] == 0 and rnd.fit_result["cold_order"] == "pop"
    empty = sp.csr_matrix((1, data.n_items), dtype=np.float32)
    assert rnd.cold_scores is not None
    np.testing.assert_allclose(rnd.cold_scores, create("pop").fit(data).score_history(empty)[0])


def test_refit_sources_false_serves_the_last_folds_sources(data: Dataset) -> None:
    """``refit_sources=False``: the served recall sources are the ones the ranker's lists came from
    (fitted without the holdout part), not a second fit on all the data."""
    params = {**SMALL, "holdout_folds": 2, "holdout_fraction": 0.3}
    refit = TwoStage(**params).fit(data)
    kept = TwoStage(**params, refit_sources=False).fit(data)
    n_all = data.to_csr("binary").nnz
    assert refit.sources["pop"]._require_fitted().nnz == n_all
    assert kept.sources["pop"]._require_fitted().nnz < n_all  # part A of the holdout only
    assert kept.fit_result["source_fit_seconds"]["pop"] > 0  # the fold's fit, counted once
    served = kept.score_users(np.arange(10))
    assert served.shape == (10, data.n_items) and np.isfinite(served).all()


@pytest.fixture(scope="module")
def no_genre_model() -> TwoStage:
    return TwoStage(**SMALL).fit(make_blocks_dataset(genres=False))


def test_a_model_fitted_without_genres_saves_loads_and_serves(
    no_genre_model: TwoStage, tmp_path: Path
) -> None:
    """Data without item genres: the genre matrix has one all-zero column (`NO_GENRE`) and every count
    of genre columns agrees with it (feature rows, `dense_names`, `column_scopes`), so the model's saved
    names match its ranker's input width: it loads, scores as before saving and is served."""
    from recstack.serving._ranker import RankContext, TwoStageRanker, load_ranker
    from recstack.serving._release import MemoryRelease

    ts = no_genre_model
    train = ts.train_matrix()
    d = ts.save(tmp_path / "m")
    back = TwoStage.load(d)
    np.testing.assert_array_equal(back.score_users(np.arange(10)), ts.score_users(np.arange(10)))

    # served: the loaded model's ranker through load_ranker (the factorised graph over column_scopes)
    ds = make_blocks_dataset(genres=False)
    rel = MemoryRelease(
        id="nogenre-0001",
        dataset=ds,
        retrievers={"itemknn": back.sources["itemknn"], "pop": back.sources["pop"], "ranker": back},
        features=back.features,
        ranker_paths={"ncf": d / "ranker" / "ranker.onnx"},
    )
    ranker = load_ranker("ncf", d / "ranker" / "ranker.onnx", rel, rel.features)
    assert isinstance(ranker, TwoStageRanker)
    for u in (0, 7, 33):
        cands = ts.candidates([u])[0]
        ctx = RankContext(u, np.zeros(4, np.int64), np.asarray(train[u].indices, dtype=np.int64))
        np.testing.assert_allclose(ranker.score(ctx, cands), ts.score_users([u])[0][cands], atol=1e-5)

    # one count of genre columns: the rows, the names and the scopes
    from recstack.features.tables import NO_GENRE

    fz = ts.featurizer()
    f = fz.features
    assert f.vocabularies["genre"] == [""] and f.genres.shape == (40, 1) and not f.genres.any()
    assert f.genre_columns == [NO_GENRE]
    names = fz.dense_names()
    assert f"genre_{NO_GENRE}" in names and f"user_genre_{NO_GENRE}" in names
    users = np.arange(5, dtype=np.int64)
    _, dense, _ = fz.features_for(train[users], users, np.tile(np.arange(40, dtype=np.int64), (5, 1)))
    assert dense.shape[2] == len(names) == len(fz.column_scopes()[0])


def test_a_no_genre_model_saved_without_the_padding_names(
    no_genre_model: TwoStage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release built (without genres) before the all-zero genre column had names recorded the names
    without its two columns, though its ranker took them: it loads. Where the recorded names equal the
    computed ones but the net's input width differs, the error says so (not "trained on 23, computes
    23")."""
    import json
    import shutil

    from recstack.errors import ArtifactError
    from recstack.features.tables import NO_GENRE
    from recstack.models.ranking.two_stage import CandidateFeaturizer

    # a copy (own files): a second save of the same object hard-links the first one's files and a load of
    # hard-linked files is shared while alive (`Retriever.save` / `load`), edits here must not be
    d = shutil.copytree(no_genre_model.save(tmp_path / "saved"), tmp_path / "m")
    names = json.loads((d / "dense_features.json").read_text())
    pad = (f"genre_{NO_GENRE}", f"user_genre_{NO_GENRE}")
    legacy = [n for n in names if n not in pad]
    assert len(legacy) == len(names) - 2
    (d / "dense_features.json").write_text(json.dumps(legacy))
    back = TwoStage.load(d)  # the columns the ranker was trained on: loads
    np.testing.assert_array_equal(back.score_users(np.arange(5)), no_genre_model.score_users(np.arange(5)))
    # a recstack whose names leave those columns out (the old count): names agree, the width does not
    full = CandidateFeaturizer.dense_names
    monkeypatch.setattr(
        CandidateFeaturizer, "dense_names", lambda self: [n for n in full(self) if n not in pad]
    )
    with pytest.raises(ArtifactError) as err:
        TwoStage.load(d)
    msg = str(err.value)
    assert (
        f"net takes {len(names)} dense inputs" in msg and f"records {len(legacy)} dense feature names" in msg
    )
